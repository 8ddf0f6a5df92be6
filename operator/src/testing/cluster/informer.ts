/**
 * List + watch into a local cache, like client-go's reflector and informer: the components read from
 * the cache and react to its events, and write through the API server. Robust by construction: any
 * watch error, a 410 Gone, or the end of a watch stream leads to a fresh list, whose differences
 * from the cache are delivered as events, so a handler never misses a change for good.
 */
import { type KubeClient, type ResourceType, resourcePath } from "./client.js";
import type { KubeObject } from "./types.js";

export type InformerEvent = "add" | "update" | "delete";
export type InformerHandler<T> = (event: InformerEvent, obj: T, old: T | undefined) => void;

interface WatchEvent<T> {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  object: T & { code?: number; message?: string };
}

export const objectKey = (obj: KubeObject): string =>
  `${obj.metadata.namespace ?? ""}/${obj.metadata.name ?? ""}`;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export class Informer<T extends KubeObject> {
  private readonly cache = new Map<string, T>();
  private readonly handlers: InformerHandler<T>[] = [];
  private readonly abort = new AbortController();
  private stopped = false;
  private running: Promise<void> | undefined;
  private resolveSynced!: () => void;
  /** Resolves once the first list is in the cache. */
  readonly synced = new Promise<void>((resolve) => {
    this.resolveSynced = resolve;
  });

  constructor(
    private readonly client: KubeClient,
    readonly type: ResourceType,
    private readonly log: (line: string) => void,
  ) {}

  onEvent(handler: InformerHandler<T>): void {
    this.handlers.push(handler);
  }

  get(namespace: string, name: string): T | undefined {
    return this.cache.get(`${namespace}/${name}`);
  }

  list(namespace?: string): T[] {
    const all = [...this.cache.values()];
    return namespace === undefined ? all : all.filter((o) => o.metadata.namespace === namespace);
  }

  start(): Promise<void> {
    this.running ??= this.run();
    return this.synced;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    await this.running;
  }

  private async run(): Promise<void> {
    let backoffMs = 100;
    while (!this.stopped) {
      try {
        const list = await this.client.list<T>(this.type, undefined, this.abort.signal);
        this.replace(list.items);
        this.resolveSynced();
        backoffMs = 100;
        const began = Date.now();
        await this.watch(list.resourceVersion);
        // A server that keeps ending watches at once must not be re-listed in a tight loop.
        if (Date.now() - began < 1000 && !this.stopped) await sleep(200);
      } catch (err) {
        if (this.stopped) break;
        this.log(`informer ${this.type.plural}: ${(err as Error).message}; re-listing in ${backoffMs} ms`);
        await sleep(backoffMs);
        backoffMs = Math.min(backoffMs * 2, 2000);
      }
    }
  }

  /** Reads one watch stream to its end; returns (to re-list) on its end, on 410 Gone or any ERROR event. */
  private async watch(resourceVersion: string): Promise<void> {
    const query = new URLSearchParams({ watch: "true", allowWatchBookmarks: "true" });
    if (resourceVersion) query.set("resourceVersion", resourceVersion);
    const url = `${this.client.baseUrl}${resourcePath(this.type)}?${query}`;
    const res = await fetch(url, { headers: this.client.headers(), signal: this.abort.signal });
    if (!res.ok || !res.body) {
      const text = await res.text().catch(() => "");
      throw new Error(`watch: HTTP ${res.status} ${text.slice(0, 200)}`);
    }
    const decoder = new TextDecoder();
    let buffered = "";
    for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
      buffered += decoder.decode(chunk, { stream: true });
      let newline = buffered.indexOf("\n");
      while (newline >= 0) {
        const line = buffered.slice(0, newline).trim();
        buffered = buffered.slice(newline + 1);
        newline = buffered.indexOf("\n");
        if (!line) continue;
        const event = JSON.parse(line) as WatchEvent<T>;
        if (event.type === "ERROR") {
          // 410 Gone (compacted history) or anything else: the only safe answer is a fresh list.
          this.log(
            `informer ${this.type.plural}: watch error ${event.object.code ?? ""} ${event.object.message ?? ""}`,
          );
          return;
        }
        if (event.type === "BOOKMARK") continue;
        this.apply(event.type, event.object);
      }
    }
  }

  private apply(type: "ADDED" | "MODIFIED" | "DELETED", obj: T): void {
    const key = objectKey(obj);
    const old = this.cache.get(key);
    if (type === "DELETED") {
      this.cache.delete(key);
      this.emit("delete", obj, old);
      return;
    }
    this.cache.set(key, obj);
    this.emit(old ? "update" : "add", obj, old);
  }

  /** Swaps in a fresh list, delivering what changed since the cache was last right. */
  private replace(items: T[]): void {
    const fresh = new Map(items.map((o) => [objectKey(o), o]));
    for (const [key, old] of [...this.cache]) {
      const now = fresh.get(key);
      if (!now || now.metadata.uid !== old.metadata.uid) {
        this.cache.delete(key);
        this.emit("delete", old, old);
      }
    }
    for (const [key, obj] of fresh) {
      const old = this.cache.get(key);
      if (old && old.metadata.resourceVersion === obj.metadata.resourceVersion) continue;
      this.cache.set(key, obj);
      this.emit(old ? "update" : "add", obj, old);
    }
  }

  private emit(event: InformerEvent, obj: T, old: T | undefined): void {
    for (const handler of this.handlers) {
      try {
        handler(event, obj, old);
      } catch (err) {
        this.log(`informer ${this.type.plural}: handler failed: ${(err as Error).stack ?? err}`);
      }
    }
  }
}

/** One informer per resource type, shared by the components of one process (as client-go's factory). */
export class InformerFactory {
  private readonly informers = new Map<string, Informer<KubeObject>>();

  constructor(
    readonly client: KubeClient,
    private readonly log: (line: string) => void,
  ) {}

  get<T extends KubeObject>(type: ResourceType): Informer<T> {
    const key = resourcePath(type);
    let informer = this.informers.get(key);
    if (!informer) {
      informer = new Informer<KubeObject>(this.client, type, this.log);
      this.informers.set(key, informer);
    }
    return informer as unknown as Informer<T>;
  }

  /** Starts every informer asked for so far and waits for their first lists. */
  async start(): Promise<void> {
    await Promise.all([...this.informers.values()].map((i) => i.start()));
  }

  async stop(): Promise<void> {
    await Promise.all([...this.informers.values()].map((i) => i.stop()));
  }
}
