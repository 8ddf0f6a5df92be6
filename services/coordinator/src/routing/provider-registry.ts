import { BATCH_DEGRADATION } from "./cost-model.js";
import type { ProviderHandle } from "./provider-handle.js";
import { PerformanceBook } from "./provider-performance.js";

export type RegistryEvent =
  | { kind: "added"; provider: ProviderHandle }
  | { kind: "removed"; provider: ProviderHandle; reason: string }
  | { kind: "capacity"; provider: ProviderHandle };

const EMPTY: ReadonlySet<ProviderHandle> = new Set();

/** The connected providers, indexed by id and by model. The link layer adds and removes them. */
export class ProviderRegistry {
  private readonly byId = new Map<string, ProviderHandle>();
  private readonly byModel = new Map<string, Set<ProviderHandle>>();
  private readonly listeners = new Set<(e: RegistryEvent) => void>();
  /** contextLimit() per model, dropped when a provider of the model leaves. */
  private readonly contextLimits = new Map<string, number>();
  /** Measured behaviour by machine id, outliving the machines' sessions. */
  readonly performance = new PerformanceBook(BATCH_DEGRADATION);

  get size(): number {
    return this.byId.size;
  }

  add(provider: ProviderHandle): void {
    if (this.byId.has(provider.id)) throw new Error(`provider ${provider.id} is already registered`);
    this.byId.set(provider.id, provider);
    for (const model of provider.models.keys()) {
      let set = this.byModel.get(model);
      if (!set) {
        set = new Set();
        this.byModel.set(model, set);
      }
      set.add(provider);
      const known = this.contextLimits.get(model);
      if (known !== undefined) this.contextLimits.set(model, Math.max(known, provider.contextLimit(model)));
    }
    this.emit({ kind: "added", provider });
  }

  remove(id: string, reason: string): ProviderHandle | undefined {
    const provider = this.byId.get(id);
    if (!provider) return undefined;
    this.byId.delete(id);
    provider.close();
    for (const model of provider.models.keys()) {
      const set = this.byModel.get(model);
      set?.delete(provider);
      if (set?.size === 0) this.byModel.delete(model);
      this.contextLimits.delete(model);
    }
    this.emit({ kind: "removed", provider, reason });
    return provider;
  }

  get(id: string): ProviderHandle | undefined {
    return this.byId.get(id);
  }

  all(): IterableIterator<ProviderHandle> {
    return this.byId.values();
  }

  serving(model: string): ReadonlySet<ProviderHandle> {
    return this.byModel.get(model) ?? EMPTY;
  }

  /** The largest context any connected provider of `model` serves (0 when none does). */
  contextLimit(model: string): number {
    let limit = this.contextLimits.get(model);
    if (limit === undefined) {
      limit = 0;
      for (const p of this.serving(model)) limit = Math.max(limit, p.contextLimit(model));
      this.contextLimits.set(model, limit);
    }
    return limit;
  }

  /** Models served by at least one connected provider. */
  servedModels(): IterableIterator<string> {
    return this.byModel.keys();
  }

  /** Tells listeners a provider's capacity changed (a slot freed, a heartbeat arrived). */
  capacityChanged(provider: ProviderHandle): void {
    this.emit({ kind: "capacity", provider });
  }

  subscribe(listener: (e: RegistryEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(e: RegistryEvent): void {
    for (const l of this.listeners) l(e);
  }
}
