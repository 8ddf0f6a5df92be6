import type { ProviderRegistry } from "../routing/provider-registry.js";
import type { DirectoryReader } from "./directory-reader.js";
import type { DirectoryEntry } from "./directory-row.js";
import type { DirectoryWriter } from "./directory-writer.js";

/** Every provider connected to the cluster, as the answers that must agree across replicas see it. */
export interface ClusterProviders {
  /** Sorted by provider id. */
  all(): DirectoryEntry[];
  /** Only the providers other replicas hold, sorted by provider id. */
  remote(): DirectoryEntry[];
}

/**
 * This replica's sessions read live (never staler than the registry) joined with the other replicas'
 * from the directory reader's cache.
 */
export class ClusterView implements ClusterProviders {
  constructor(
    private readonly registry: ProviderRegistry,
    private readonly writer: DirectoryWriter,
    private readonly reader: DirectoryReader,
  ) {}

  all(): DirectoryEntry[] {
    const out: DirectoryEntry[] = [];
    for (const handle of this.registry.all()) {
      const entry = this.writer.entryOf(handle.id);
      if (entry) out.push(entry);
    }
    out.push(...this.reader.remote());
    return out.sort(byId);
  }

  remote(): DirectoryEntry[] {
    return this.reader.remote();
  }
}

function byId(a: DirectoryEntry, b: DirectoryEntry): number {
  return a.providerId < b.providerId ? -1 : a.providerId > b.providerId ? 1 : 0;
}
