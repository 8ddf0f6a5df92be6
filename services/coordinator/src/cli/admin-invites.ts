import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Invite, InviteSchema, ListInvitesResponseSchema } from "@darkbloom/protocol/admin/v1";
import type { Command } from "commander";
import { type AdminCommands, protoJson } from "./admin-call.js";
import { fields, table, time, usd } from "./format.js";
import { UsageError } from "./io.js";
import { duration, isoTime, positiveInteger, positiveMicroUsd } from "./parse.js";

/** `admin invites …`: invite codes that credit the accounts redeeming them. */
export function addInviteCommands(admin: Command, cli: AdminCommands): void {
  const invites = cli.group(admin, "invites", "invite codes that credit the accounts redeeming them");
  cli
    .command(invites, "create", "create an invite code (shown once)", async (call) => {
      if (call.opts.expiresIn !== undefined && call.opts.expiresAt !== undefined) {
        throw new UsageError("give --expires-in or --expires-at, not both");
      }
      const expiresIn = call.opts.expiresIn as number | undefined;
      const expiresAt =
        (call.opts.expiresAt as Date | undefined) ??
        (expiresIn ? new Date(Date.now() + expiresIn) : undefined);
      const { invite, code } = await call.client.createInvite({
        creditMicroUsd: call.opts.creditMicroUsd as bigint,
        maxUses: (call.opts.maxUses as number | undefined) ?? 1,
        ...(expiresAt ? { expiresAt: timestampFromDate(expiresAt) } : {}),
        code: (call.opts.code as string | undefined) ?? "",
        note: (call.opts.note as string | undefined) ?? "",
      });
      call.print(
        () => ({
          invite_id: invite?.id,
          code,
          credit_micro_usd: String(invite?.creditMicroUsd ?? 0n),
          max_uses: invite?.maxUses,
          expires_at: invite?.expiresAt ? time(invite.expiresAt) : null,
        }),
        () =>
          fields([
            ["invite", invite?.id ?? ""],
            ["code", code],
            ["credit", `${usd(invite?.creditMicroUsd ?? 0n)} per account`],
            ["uses", `up to ${invite?.maxUses}`],
            ["expires", time(invite?.expiresAt)],
            ["", "the code is shown only this once: store it now"],
          ]),
      );
    })
    .requiredOption("--credit-micro-usd <amount>", "credit per redemption in micro-USD", positiveMicroUsd)
    .option("--max-uses <n>", "how many accounts may redeem it (default 1)", positiveInteger(1_000_000_000))
    .option("--expires-in <duration>", "expire after e.g. 12h or 30d", duration)
    .option("--expires-at <time>", "expire at an ISO 8601 time", isoTime)
    .option("--code <code>", "choose the code (4-64 letters or digits) instead of generating one")
    .option("--note <text>", "label for the invite");
  cli
    .command(invites, "list", "list invite codes, newest first (never the codes)", async (call) => {
      const page = await call.client.listInvites({
        pageSize: (call.opts.pageSize as number | undefined) ?? 0,
        pageToken: (call.opts.pageToken as string | undefined) ?? "",
      });
      call.print(
        () => protoJson(ListInvitesResponseSchema, page),
        () =>
          table(
            ["ID", "PREFIX", "CREDIT", "USES", "EXPIRES", "REVOKED", "NOTE"],
            page.invites.map(inviteRow),
          ) + (page.nextPageToken ? `more: --page-token ${page.nextPageToken}\n` : ""),
      );
    })
    .option("--page-size <n>", "invites per page (default 50)", positiveInteger(500))
    .option("--page-token <token>", "continue a previous listing");
  cli
    .command(invites, "revoke", "stop an invite code from being redeemed", async (call) => {
      const { invite } = await call.client.revokeInvite({ inviteId: call.args[0] as string });
      call.print(
        () => protoJson(InviteSchema, invite),
        () => `revoked ${invite?.id} (${invite?.prefix}…) after ${invite?.uses} of ${invite?.maxUses} uses\n`,
      );
    })
    .argument("<invite-id>");
}

function inviteRow(invite: Invite): string[] {
  return [
    invite.id,
    `${invite.prefix}…`,
    usd(invite.creditMicroUsd),
    `${invite.uses}/${invite.maxUses}`,
    time(invite.expiresAt),
    time(invite.revokedAt),
    invite.note,
  ];
}
