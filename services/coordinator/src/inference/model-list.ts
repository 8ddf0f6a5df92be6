import type { ClusterProviders } from "../cluster/cluster-view.js";

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

/**
 * The models a consumer may ask for: enabled catalog entries plus models served by providers connected
 * to any replica of the cluster, so that every replica lists the same.
 */
export function listModels(providers: ClusterProviders, catalog: CatalogListing): ListedModel[] {
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
  // Per model: how many providers anywhere in the cluster serve it, the largest context, the earliest.
  const served = new Map<string, { providers: number; contextLength: number; earliest: number }>();
  for (const p of providers.all()) {
    for (const m of p.models) {
      const s = served.get(m.id) ?? { providers: 0, contextLength: 0, earliest: Number.POSITIVE_INFINITY };
      s.providers++;
      s.contextLength = Math.max(s.contextLength, m.contextLength);
      s.earliest = Math.min(s.earliest, p.connectedAt);
      served.set(m.id, s);
    }
  }
  for (const [id, s] of served) {
    if (disabled.has(id)) continue;
    const entry = out.get(id) ?? {
      id,
      created: Math.floor(s.earliest / 1000),
      ownedBy: "darkbloom",
      providers: 0,
      contextLength: 0,
    };
    entry.providers = s.providers;
    entry.contextLength = s.contextLength;
    out.set(id, entry);
  }
  return [...out.values()].sort((a, b) => a.id.localeCompare(b.id));
}
