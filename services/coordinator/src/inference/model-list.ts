import type { ProviderRegistry } from "../routing/provider-registry.js";

/** What listing needs of the model catalog: every entry, enabled or not (served from memory). */
export interface CatalogListing {
  list(): Array<{ id: string; enabled: boolean; ownedBy: string; createdAt: Date }>;
}

export interface ListedModel {
  id: string;
  created: number;
  ownedBy: string;
  providers: number;
  contextLength: number;
}

/** The models a consumer may ask for: enabled catalog entries plus models connected providers serve. */
export function listModels(registry: ProviderRegistry, catalog: CatalogListing): ListedModel[] {
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
