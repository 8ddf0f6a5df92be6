import { ListUsageResponseSchema } from "@darkbloom/protocol/admin/v1";
import type { Command } from "commander";
import { type AdminCommands, protoJson } from "./admin-call.js";
import { fields, table, time, usd } from "./format.js";
import { positiveInteger } from "./parse.js";

/** `admin usage`: an account's balances and recent requests. */
export function addUsageCommand(admin: Command, cli: AdminCommands): void {
  cli
    .command(admin, "usage", "an account's balances and recent requests, newest first", async (call) => {
      const response = await call.client.listUsage({
        accountId: call.args[0] as string,
        pageSize: (call.opts.pageSize as number | undefined) ?? 0,
        pageToken: (call.opts.pageToken as string | undefined) ?? "",
      });
      call.print(
        () => protoJson(ListUsageResponseSchema, response),
        () =>
          fields([
            ["account", response.accountId],
            ["credited", usd(response.creditedMicroUsd)],
            ["earned", usd(response.earnedMicroUsd)],
            ["held", usd(response.heldMicroUsd)],
          ]) +
          table(
            ["REQUEST", "MODEL", "OUTCOME", "TOKENS IN/OUT", "RESERVED", "CHARGED", "CREATED"],
            response.records.map((r) => [
              r.requestId,
              r.model,
              r.outcome,
              `${r.promptTokens}/${r.completionTokens}`,
              usd(r.reservedMicroUsd),
              usd(r.chargedMicroUsd),
              time(r.createdAt),
            ]),
          ) +
          (response.nextPageToken ? `more: --page-token ${response.nextPageToken}\n` : ""),
      );
    })
    .argument("<account-id>")
    .option("--page-size <n>", "requests per page (default 50)", positiveInteger(500))
    .option("--page-token <token>", "continue a previous listing");
}
