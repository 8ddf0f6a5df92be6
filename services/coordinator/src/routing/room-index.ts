import type { ProviderHandle } from "./provider-handle.js";

/**
 * The providers of each model that have a free slot, kept as the router leases and releases slots,
 * so that routing and queue draining look at those instead of every provider of the model (10,000
 * connected providers made routing one model's request cost milliseconds). Each model's set is an
 * array with an index map: O(1) add and delete, and uniform random samples.
 */
export class RoomIndex {
  private readonly byModel = new Map<string, { list: ProviderHandle[]; at: Map<ProviderHandle, number> }>();

  /** Records whether `p` has room now, for each of its models. */
  update(p: ProviderHandle): void {
    const hasRoom = !p.closed && p.freeSlots > 0;
    for (const model of p.models.keys()) {
      if (hasRoom) this.add(model, p);
      else this.delete(model, p);
    }
  }

  /** Providers of `model` with a free slot. */
  count(model: string): number {
    return this.byModel.get(model)?.list.length ?? 0;
  }

  /**
   * Every provider of `model` with a free slot when there are at most `k`, otherwise `k` drawn
   * uniformly at random (with replacement): the candidates a request is scored against.
   */
  sample(model: string, k: number, random: () => number = Math.random): ProviderHandle[] {
    const list = this.byModel.get(model)?.list;
    if (!list) return [];
    if (list.length <= k) return [...list];
    return Array.from({ length: k }, () => list[Math.floor(random() * list.length)] as ProviderHandle);
  }

  /** Every provider of `model` with a free slot. */
  all(model: string): readonly ProviderHandle[] {
    return this.byModel.get(model)?.list ?? [];
  }

  private add(model: string, p: ProviderHandle): void {
    let entry = this.byModel.get(model);
    if (!entry) {
      entry = { list: [], at: new Map() };
      this.byModel.set(model, entry);
    }
    if (entry.at.has(p)) return;
    entry.at.set(p, entry.list.length);
    entry.list.push(p);
  }

  private delete(model: string, p: ProviderHandle): void {
    const entry = this.byModel.get(model);
    const i = entry?.at.get(p);
    if (!entry || i === undefined) return;
    const last = entry.list.pop() as ProviderHandle;
    if (last !== p) {
      entry.list[i] = last;
      entry.at.set(last, i);
    }
    entry.at.delete(p);
    if (entry.list.length === 0) this.byModel.delete(model);
  }
}
