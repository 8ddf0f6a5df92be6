import type { Authenticator } from "../../auth/authenticator.js";
import { isApiError, unexpectedError } from "../../errors/index.js";
import type { ProviderRegistry } from "../../routing/provider-registry.js";
import { newRequestId } from "../request-id.js";
import { sendError, sendJson } from "../respond.js";
import type { Handler } from "../types.js";

export interface ListedModel {
  id: string;
  created: number;
  ownedBy: string;
  providers: number;
  contextLength: number;
}

/** The models a consumer may ask for: enabled catalog entries plus models connected providers serve. */
export function listModels(
  registry: ProviderRegistry,
  catalog: { list(): Array<{ id: string; enabled: boolean; ownedBy: string; createdAt: Date }> },
): ListedModel[] {
  const out = new Map<string, ListedModel>();
  for (const m of catalog.list()) {
    if (!m.enabled) continue;
    out.set(m.id, {
      id: m.id,
      created: Math.floor(m.createdAt.getTime() / 1000),
      ownedBy: m.ownedBy || "darkbloom",
      providers: 0,
      contextLength: 0,
    });
  }
  const disabled = new Set(
    catalog
      .list()
      .filter((m) => !m.enabled)
      .map((m) => m.id),
  );
  for (const id of registry.servedModels()) {
    if (disabled.has(id)) continue;
    let contextLength = 0;
    const providers = registry.serving(id);
    let earliest = Number.POSITIVE_INFINITY;
    for (const p of providers) {
      contextLength = Math.max(contextLength, p.contextLimit(id));
      earliest = Math.min(earliest, p.connectedAt);
    }
    const entry = out.get(id) ?? {
      id,
      created: Math.floor(earliest / 1000),
      ownedBy: "darkbloom",
      providers: 0,
      contextLength: 0,
    };
    entry.providers = providers.size;
    entry.contextLength = contextLength;
    out.set(id, entry);
  }
  return [...out.values()].sort((a, b) => a.id.localeCompare(b.id));
}

/** GET /v1/models in OpenAI's list shape. */
export function modelsHandler(
  auth: Authenticator,
  registry: ProviderRegistry,
  catalog: Parameters<typeof listModels>[1],
): Handler {
  return async (req, res) => {
    const headers = { "X-Request-ID": newRequestId() };
    try {
      await auth.authenticateRequest(req);
      const data = listModels(registry, catalog).map((m) => ({
        id: m.id,
        object: "model",
        created: m.created,
        owned_by: m.ownedBy,
      }));
      sendJson(res, 200, { object: "list", data }, headers);
    } catch (e) {
      sendError(res, isApiError(e) ? e : unexpectedError(e), headers);
    }
  };
}
