import { randomUUID } from "node:crypto";
import { CreditAccountResponseSchema } from "@darkbloom/protocol/admin/v1";
import type { Command } from "commander";
import { type AdminCommands, protoJson } from "./admin-call.js";
import { usd } from "./format.js";
import { positiveMicroUsd } from "./parse.js";

/** `admin credits add`: credit an account, once per idempotency key. */
export function addCreditCommands(admin: Command, cli: AdminCommands): void {
  const credits = cli.group(admin, "credits", "account credit");
  cli
    .command(credits, "add", "credit an account, once per idempotency key", async (call) => {
      const idempotencyKey = (call.opts.idempotencyKey as string | undefined) ?? `cli-${randomUUID()}`;
      const response = await call.client.creditAccount({
        accountId: call.args[0] as string,
        amountMicroUsd: call.args[1] as bigint,
        idempotencyKey,
        note: (call.opts.note as string | undefined) ?? "",
      });
      const balance = usd(response.account?.balanceMicroUsd ?? 0n);
      call.print(
        () => ({
          ...(protoJson(CreditAccountResponseSchema, response) as object),
          idempotency_key: idempotencyKey,
        }),
        () =>
          response.applied
            ? `credited ${usd(call.args[1] as bigint)} to ${response.account?.id}: balance ${balance} (idempotency key ${idempotencyKey})\n`
            : `not applied: idempotency key ${idempotencyKey} was used already; balance ${balance}\n`,
      );
    })
    .argument("<account-id>")
    .argument("<amount-micro-usd>", "credit in micro-USD (1 USD = 1000000)", positiveMicroUsd)
    .option("--idempotency-key <key>", "retry-safe key (default: a new random one)")
    .option("--note <text>", "reason recorded in the ledger");
}
