/**
 * ControllerExpectations, as the ReplicaSet and Job controllers use them: after creating or deleting
 * pods, a controller must not act on its cache again until the cache has seen those writes, or it
 * would count the same pods twice and create (or delete) too many. Tracked by pod name; an expectation
 * that is never observed expires, so a lost event cannot wedge a controller.
 */

interface Pending {
  creates: Set<string>;
  deletes: Set<string>;
  since: number;
}

export class Expectations {
  private readonly pending = new Map<string, Pending>();

  constructor(private readonly timeoutMs = 15_000) {}

  private entry(key: string): Pending {
    let entry = this.pending.get(key);
    if (!entry) {
      entry = { creates: new Set(), deletes: new Set(), since: Date.now() };
      this.pending.set(key, entry);
    }
    entry.since = Date.now();
    return entry;
  }

  expectCreate(key: string, pod: string): void {
    this.entry(key).creates.add(pod);
  }

  expectDelete(key: string, pod: string): void {
    this.entry(key).deletes.add(pod);
  }

  /** The pod appeared in the cache, or its creation failed. */
  createObserved(key: string, pod: string): void {
    this.pending.get(key)?.creates.delete(pod);
  }

  /** The pod got a deletionTimestamp or left the cache, or its deletion failed. */
  deleteObserved(key: string, pod: string): void {
    this.pending.get(key)?.deletes.delete(pod);
  }

  satisfied(key: string): boolean {
    const entry = this.pending.get(key);
    if (!entry) return true;
    if (entry.creates.size === 0 && entry.deletes.size === 0) return true;
    return Date.now() - entry.since > this.timeoutMs;
  }

  forget(key: string): void {
    this.pending.delete(key);
  }
}
