import type { ClusterProviders } from "../../cluster/cluster-view.js";
import { accountEndpoint, type JsonEndpointDeps } from "../json-endpoint.js";
import type { Handler } from "../types.js";

/**
 * GET /v1/account/machines: the caller's machines connected now, on whichever replica holds them
 * (the provider directory: those whose share is paid to this account, i.e. linked to it with
 * `darkbloom login`), each with its models (loaded or not), state, and how this coordinator judges
 * it: trust level and reason codes, its last challenge, the hardware it says it serves on. The
 * judgement is the one GET /v1/providers/attestation publishes for everyone; this only finds the
 * account's own among them.
 */
export function accountMachinesHandler(deps: JsonEndpointDeps & { cluster: ClusterProviders }): Handler {
  return accountEndpoint(deps, async ({ principal }) => ({
    object: "list",
    data: deps.cluster
      .all()
      .filter((e) => e.dispatch?.payoutAccount === principal.accountId)
      .map((e) => {
        const view = e.attestation ?? {};
        const loaded = new Set(e.dispatch?.loadedModels ?? []);
        return {
          object: "machine",
          provider_id: e.providerId,
          machine_id: e.machineId,
          daemon_version: e.daemonVersion,
          connected_at: Math.floor(e.connectedAt / 1000),
          state: e.draining ? "draining" : e.freeSlots < e.maxBatch ? "serving" : "idle",
          models: e.models.map((m) => ({ id: m.id, loaded: loaded.has(m.id) })),
          trust_level: e.trustLevel,
          routable: e.routable,
          attested: e.attested,
          reasons: view.reasons ?? e.trustReasons.map((code) => ({ code, message: "" })),
          last_challenge: view.last_challenge ?? null,
          last_passed_challenge_at: view.last_passed_challenge_at ?? null,
          hardware: view.hardware ?? null,
        };
      }),
  }));
}
