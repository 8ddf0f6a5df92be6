import { ListProvidersResponseSchema } from "@darkbloom/protocol/admin/v1";
import type { Command } from "commander";
import { type AdminCommands, protoJson } from "./admin-call.js";
import { table } from "./format.js";

/** `admin providers …`: the connected providers; draining one, loading and unloading its models. */
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
            ["ID", "VERSION", "TRUST", "STATE", "BUSY", "TOK/S", "CHIP", "MODELS", "LOADED"],
            response.providers.map((provider) => [
              provider.providerId,
              provider.daemonVersion,
              provider.trustLevel,
              provider.state,
              `${provider.busySlots}/${provider.maxBatch}`,
              provider.decodeTokensPerSecond.toFixed(1),
              provider.chip || "-",
              provider.models.join(","),
              provider.loadedModels.join(",") || "-",
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
  for (const kind of ["load", "unload"] as const) {
    cli
      .command(
        providers,
        kind,
        kind === "load"
          ? "have a provider load one of its models into memory (waits for it)"
          : "have a provider free one of its loaded models (a request for it loads it again)",
        async (call) => {
          const [providerId, modelId] = call.args as [string, string];
          const request = { providerId, modelId };
          if (kind === "load") await call.client.loadProviderModel(request);
          else await call.client.unloadProviderModel(request);
          call.print(
            () => ({
              provider_id: providerId,
              model_id: modelId,
              [kind === "load" ? "loaded" : "unloaded"]: true,
            }),
            () => `${kind === "load" ? "loaded" : "unloaded"} ${modelId} on ${providerId}\n`,
          );
        },
      )
      .argument("<provider-id>")
      .argument("<model-id>");
  }
}
