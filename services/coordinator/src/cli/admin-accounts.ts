import { type Account, AccountSchema, ListAccountsResponseSchema } from "@darkbloom/protocol/admin/v1";
import type { Command } from "commander";
import { type AdminCommands, protoJson } from "./admin-call.js";
import { fields, table, time, usd } from "./format.js";
import { microUsd, positiveInteger } from "./parse.js";

/** `admin accounts …`: create accounts (with their first API key), list and show them. */
export function addAccountCommands(admin: Command, cli: AdminCommands): void {
  const accounts = cli.group(admin, "accounts", "consumer and provider accounts");
  cli
    .command(accounts, "create", "create an account and its first API key (shown once)", async (call) => {
      const { account, apiKey, apiKeySecret } = await call.client.createAccount({
        name: call.opts.name as string,
        initialCreditMicroUsd: (call.opts.creditMicroUsd as bigint | undefined) ?? 0n,
        referrerCode: (call.opts.referrer as string | undefined) ?? "",
      });
      call.print(
        () => ({
          account_id: account?.id,
          api_key_id: apiKey?.id,
          api_key: apiKeySecret,
          ...(account?.referrerId ? { referrer_id: account.referrerId } : {}),
        }),
        () =>
          fields([
            ["account", `${account?.id} (${account?.name})`],
            ["balance", usd(account?.balanceMicroUsd ?? 0n)],
            ...(account?.referrerId ? [["referrer", account.referrerId] as const] : []),
            ["api key", apiKeySecret],
            ["", "the key is shown only this once: store it now"],
          ]),
      );
    })
    .requiredOption("--name <name>", "label for the account")
    .option("--credit-micro-usd <amount>", "initial credit in micro-USD", microUsd)
    .option("--referrer <code>", "another account's referral code: that account becomes the referrer");
  cli
    .command(accounts, "list", "list accounts, newest first", async (call) => {
      const page = await call.client.listAccounts({
        pageSize: (call.opts.pageSize as number | undefined) ?? 0,
        pageToken: (call.opts.pageToken as string | undefined) ?? "",
      });
      call.print(
        () => protoJson(ListAccountsResponseSchema, page),
        () =>
          table(["ID", "NAME", "BALANCE", "CREATED", "DISABLED"], page.accounts.map(accountRow)) +
          (page.nextPageToken ? `more: --page-token ${page.nextPageToken}\n` : ""),
      );
    })
    .option("--page-size <n>", "accounts per page (default 50)", positiveInteger(500))
    .option("--page-token <token>", "continue a previous listing");
  cli
    .command(accounts, "get", "show one account and its balance", async (call) => {
      const { account } = await call.client.getAccount({ accountId: call.args[0] as string });
      call.print(
        () => protoJson(AccountSchema, account),
        () => (account ? accountFields(account) : ""),
      );
    })
    .argument("<account-id>");
}

function accountRow(account: Account): string[] {
  return [
    account.id,
    account.name,
    usd(account.balanceMicroUsd),
    time(account.createdAt),
    account.disabled ? "yes" : "no",
  ];
}

function accountFields(account: Account): string {
  return fields([
    ["id", account.id],
    ["name", account.name],
    ["balance", `${usd(account.balanceMicroUsd)} (${account.balanceMicroUsd} micro-USD)`],
    ["created", time(account.createdAt)],
    ["disabled", account.disabled ? "yes" : "no"],
  ]);
}
