import { type JsonObject, meta, str } from "./json.js";

export type EventType = "ADDED" | "MODIFIED" | "DELETED";

/** One write, as watches see it: the object as stored after the write (with the write's resourceVersion). */
export interface StoredEvent {
  readonly type: EventType;
  readonly storageKey: string;
  readonly rv: number;
  readonly object: JsonObject;
  /** The object before a MODIFIED write: watches with selectors turn objects leaving or entering them into DELETED or ADDED. */
  readonly previous?: JsonObject;
}

interface History {
  events: StoredEvent[];
  /** The highest resourceVersion whose event is no longer kept: watches from before it get 410. */
  droppedUpTo: number;
}

/** Watches from a resourceVersion whose events were dropped; `oldest` is the first one still available. */
export interface TooOld {
  tooOld: true;
  oldest: number;
}

function objectKey(object: JsonObject): string {
  const m = meta(object);
  return `${str(m.namespace) ?? ""}/${str(m.name) ?? ""}`;
}

/**
 * All objects, like etcd behind the watch cache: one global resourceVersion counter bumped by every
 * write, and per resource a bounded history of events for watches that resume from a resourceVersion.
 * Stored objects are never mutated; every write stores a new object.
 */
export class Store {
  private rv = 1;
  private readonly objects = new Map<string, Map<string, JsonObject>>();
  private readonly uids = new Map<string, { storageKey: string; key: string }>();
  private readonly histories = new Map<string, History>();
  /** compactHistory(): every resource's history is dropped up to here, including resources created later. */
  private compactedUpTo = 0;
  private readonly listeners = new Set<(event: StoredEvent) => void>();

  constructor(private readonly historyLimit: number) {}

  currentRv(): number {
    return this.rv;
  }

  get(storageKey: string, namespace: string, name: string): JsonObject | undefined {
    return this.objects.get(storageKey)?.get(`${namespace}/${name}`);
  }

  /** Objects of a resource (in one namespace when given), in namespace/name order as the real server lists. */
  list(storageKey: string, namespace?: string): JsonObject[] {
    const all = [...(this.objects.get(storageKey)?.entries() ?? [])];
    return all
      .filter(([key]) => namespace === undefined || key.startsWith(`${namespace}/`))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([, object]) => object);
  }

  storageKeys(): string[] {
    return [...this.objects.keys()];
  }

  byUid(uid: string): { storageKey: string; object: JsonObject } | undefined {
    const where = this.uids.get(uid);
    if (!where) return undefined;
    const object = this.objects.get(where.storageKey)?.get(where.key);
    return object && { storageKey: where.storageKey, object };
  }

  /** The resourceVersion the next write will get (dry runs show it without writing). */
  nextRv(): string {
    return String(this.rv + 1);
  }

  create(storageKey: string, object: JsonObject): JsonObject {
    return this.write("ADDED", storageKey, object);
  }

  update(storageKey: string, object: JsonObject): JsonObject {
    return this.write("MODIFIED", storageKey, object);
  }

  /** Removes an object; the DELETED event carries it with a resourceVersion of its own, as etcd's delete has. */
  remove(storageKey: string, object: JsonObject): JsonObject {
    return this.write("DELETED", storageKey, object);
  }

  private write(type: EventType, storageKey: string, object: JsonObject): JsonObject {
    this.rv += 1;
    const stored: JsonObject = { ...object, metadata: { ...meta(object), resourceVersion: String(this.rv) } };
    const key = objectKey(stored);
    const uid = str(meta(stored).uid) ?? "";
    let objects = this.objects.get(storageKey);
    if (!objects) {
      objects = new Map();
      this.objects.set(storageKey, objects);
    }
    const previous = objects.get(key);
    if (type === "DELETED") {
      objects.delete(key);
      this.uids.delete(uid);
    } else {
      objects.set(key, stored);
      this.uids.set(uid, { storageKey, key });
    }
    const event: StoredEvent = {
      type,
      storageKey,
      rv: this.rv,
      object: stored,
      ...(previous ? { previous } : {}),
    };
    this.record(event);
    for (const listener of this.listeners) listener(event);
    return stored;
  }

  private record(event: StoredEvent): void {
    let history = this.histories.get(event.storageKey);
    if (!history) {
      history = { events: [], droppedUpTo: this.compactedUpTo };
      this.histories.set(event.storageKey, history);
    }
    history.events.push(event);
    const excess = history.events.length - this.historyLimit;
    if (excess > 0) {
      const dropped = history.events.splice(0, excess);
      history.droppedUpTo = dropped[dropped.length - 1]!.rv;
    }
  }

  /** Events of a resource after `rv`, or TooOld when some of them are no longer kept. */
  eventsSince(storageKey: string, rv: number): StoredEvent[] | TooOld {
    const history = this.histories.get(storageKey);
    const droppedUpTo = Math.max(history?.droppedUpTo ?? 0, this.compactedUpTo);
    if (rv < droppedUpTo) return { tooOld: true, oldest: droppedUpTo + 1 };
    return (history?.events ?? []).filter((e) => e.rv > rv);
  }

  compact(): void {
    this.compactedUpTo = this.rv;
    for (const history of this.histories.values()) {
      history.events = [];
      history.droppedUpTo = this.rv;
    }
  }

  subscribe(listener: (event: StoredEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
