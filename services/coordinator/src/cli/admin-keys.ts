import { ApiKeySchema, ListApiKeysResponseSchema } from "@darkbloom/protocol/admin/v1";
import type { Command } from "commander";
import { type AdminCommands, protoJson } from "./admin-call.js";
import { fields, table, time } from "./format.js";

/** `admin keys …`: issue, list and revoke an account's API keys. */
export function addKeyCommands(admin: Command, cli: AdminCommands): void {
  const keys = cli.group(admin, "keys", "API keys");
  cli
    .command(keys, "create", "issue an API key for an account (shown once)", async (call) => {
      const { apiKey, apiKeySecret } = await call.client.createApiKey({
        accountId: call.args[0] as string,
        name: (call.opts.name as string | undefined) ?? "",
      });
      call.print(
        () => ({ account_id: apiKey?.accountId, api_key_id: apiKey?.id, api_key: apiKeySecret }),
        () =>
          fields([
            ["key id", apiKey?.id ?? ""],
            ["api key", apiKeySecret],
            ["", "the key is shown only this once: store it now"],
          ]),
      );
    })
    .argument("<account-id>")
    .option("--name <name>", "label for the key");
  cli
    .command(keys, "list", "list an account's API keys (never their secrets)", async (call) => {
      const response = await call.client.listApiKeys({ accountId: call.args[0] as string });
      call.print(
        () => protoJson(ListApiKeysResponseSchema, response),
        () =>
          table(
            ["ID", "NAME", "PREFIX", "CREATED", "REVOKED"],
            response.apiKeys.map((key) => [
              key.id,
              key.name,
              key.prefix,
              time(key.createdAt),
              time(key.revokedAt),
            ]),
          ),
      );
    })
    .argument("<account-id>");
  cli
    .command(keys, "revoke", "revoke an API key", async (call) => {
      const { apiKey } = await call.client.revokeApiKey({ apiKeyId: call.args[0] as string });
      call.print(
        () => protoJson(ApiKeySchema, apiKey),
        () => `revoked ${apiKey?.id} (${apiKey?.prefix}…) at ${time(apiKey?.revokedAt)}\n`,
      );
    })
    .argument("<key-id>");
}
