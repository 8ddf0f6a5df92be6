import { type KubeConfig, ListWatch, Watch } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { type KubeApi, type KubeObject, type ResourceType, resourcePath } from "./kube-api.js";

export type InformerEvent = "add" | "update" | "delete";

export interface InformerOptions {
  /** Watch one namespace; all namespaces when absent. */
  namespace?: string | undefined;
  labelSelector?: string;
  /** First restart delay after an error; doubled per consecutive error, up to maxBackoffMs. */
  baseBackoffMs?: number;
  maxBackoffMs?: number;
  /** Told of each restart after an error (metrics). */
  onRestart?: () => void;
}

/**
 * A cache of one resource type kept current by list + watch (client-node's ListWatch, which re-lists
 * when the server answers 410 Gone and re-watches from the last resourceVersion when a stream ends).
 * What ListWatch does not do, this adds: after any other error (a 500, a refused connection, a
 * failed list) it stops for good, so the informer restarts it after an exponential, jittered delay —
 * informers of many operators restarting in step would hammer a recovering API server.
 */
export class Informer<T extends KubeObject> {
  private readonly listWatch: ListWatch<T>;
  private readonly handlers: ((event: InformerEvent, object: T) => void)[] = [];
  private failures = 0;
  private restartTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private syncedOnce = false;
  private readonly synced: Promise<void>;
  private markSynced: () => void = () => undefined;

  constructor(
    kc: KubeConfig,
    api: KubeApi,
    readonly type: ResourceType,
    private readonly log: Logger,
    private readonly options: InformerOptions = {},
  ) {
    this.synced = new Promise((resolve) => {
      this.markSynced = resolve;
    });
    const list = async () => {
      const result = await api.list<T>(type, options.namespace, options.labelSelector);
      // A successful list means the API server is reachable again: the next error starts over.
      this.failures = 0;
      if (!this.syncedOnce) {
        this.syncedOnce = true;
        queueMicrotask(() => this.markSynced());
      }
      return {
        apiVersion: "v1",
        kind: "List",
        metadata: { resourceVersion: result.metadata.resourceVersion ?? "" },
        items: result.items,
      };
    };
    this.listWatch = new ListWatch<T>(
      resourcePath(type, { namespace: options.namespace }),
      new Watch(kc),
      list,
      false,
      options.labelSelector,
    );
    this.listWatch.on("add", (object) => this.emit("add", object));
    this.listWatch.on("update", (object) => this.emit("update", object));
    this.listWatch.on("delete", (object) => this.emit("delete", object));
    this.listWatch.on("error", (error) => this.restartLater(error));
  }

  on(handler: (event: InformerEvent, object: T) => void): void {
    this.handlers.push(handler);
  }

  /** Starts listing and watching; resolves once the first list has filled the cache. */
  async start(): Promise<void> {
    this.stopped = false;
    void this.listWatch.start().catch((error: unknown) => this.restartLater(error));
    await this.synced;
  }

  get(namespace: string | undefined, name: string): T | undefined {
    return this.listWatch.get(name, namespace);
  }

  list(namespace?: string): readonly T[] {
    return this.listWatch.list(namespace);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.restartTimer);
    await this.listWatch.stop();
  }

  private emit(event: InformerEvent, object: T): void {
    for (const handler of this.handlers) handler(event, object);
  }

  private restartLater(error: unknown): void {
    if (this.stopped || this.restartTimer !== undefined) return;
    this.failures += 1;
    const base = this.options.baseBackoffMs ?? 500;
    const ceiling = Math.min(
      this.options.maxBackoffMs ?? 30_000,
      base * 2 ** Math.min(this.failures - 1, 16),
    );
    const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    this.log.warn(
      { resource: this.type.plural, err: describe(error), retryInMs: delay },
      "watch failed; restarting the informer",
    );
    this.options.onRestart?.();
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (this.stopped) return;
      void this.listWatch.start().catch((e: unknown) => this.restartLater(e));
    }, delay);
  }
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    const status = (error as { statusCode?: number }).statusCode;
    return status ? `HTTP ${status}: ${error.message}` : error.message;
  }
  return String(error);
}
