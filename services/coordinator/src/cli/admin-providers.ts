import { ListProvidersResponseSchema } from "@darkbloom/protocol/admin/v1";
import type { Command } from "commander";
import { type AdminCommands, protoJson } from "./admin-call.js";
import { table } from "./format.js";

/** `admin providers …`: the connected providers, and draining one. */
export function addProviderCommands(admin: Command, cli: AdminCommands): void {
  const providers = cli.group(admin, "providers", "connected providers");
  cli
    .command(providers, "list", "list connected providers and their live state", async (call) => {
      const response = await call.client.listProviders({
        model: (call.opts.model as string | undefined) ?? "",
      });
      call.print(
        () => protoJson(ListProvidersResponseSchema, response),
        () =>
          table(
            ["ID", "VERSION", "TRUST", "STATE", "BUSY", "TOK/S", "CHIP", "MODELS"],
            response.providers.map((provider) => [
              provider.providerId,
              provider.daemonVersion,
              provider.trustLevel,
              provider.state,
              `${provider.busySlots}/${provider.maxBatch}`,
              provider.decodeTokensPerSecond.toFixed(1),
              provider.chip || "-",
              provider.models.join(","),
            ]),
          ),
      );
    })
    .option("--model <model-id>", "only providers serving this model");
  cli
    .command(providers, "drain", "ask a provider to finish its work and reconnect", async (call) => {
      const providerId = call.args[0] as string;
      await call.client.drainProvider({ providerId, reason: (call.opts.reason as string | undefined) ?? "" });
      call.print(
        () => ({ provider_id: providerId, drained: true }),
        () => `draining ${providerId}\n`,
      );
    })
    .argument("<provider-id>")
    .option("--reason <text>", "passed on to the provider");
}
