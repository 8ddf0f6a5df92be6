import type { Logger } from "pino";
import type { InformerEvent } from "./informer.js";
import type { KubeObject } from "./kube-api.js";
import type { OperatorMetrics } from "./metrics.js";
import { type ReconcileResult, WorkQueue } from "./work-queue.js";

/** "namespace/name": the key a controller's queue holds. */
export function keyOf(object: KubeObject): string {
  return `${object.metadata?.namespace ?? ""}/${object.metadata?.name ?? ""}`;
}

export function splitKey(key: string): { namespace: string; name: string } {
  const slash = key.indexOf("/");
  return { namespace: key.slice(0, slash), name: key.slice(slash + 1) };
}

/** What a controller needs of an informer (any resource type: the keys are all it takes from objects). */
export interface EventSource {
  on(handler: (event: InformerEvent, object: KubeObject) => void): void;
  list(namespace?: string): readonly KubeObject[];
}

/** What a controller reconciles, and which informers' events name which of its keys. */
export interface ControllerSpec {
  name: string;
  /** The informer of the resource the controller reconciles: each of its events queues the object's key. */
  primary: EventSource;
  /** Other resources whose changes concern primary objects (owned objects, referenced secrets). */
  secondary: { informer: EventSource; keys: (object: KubeObject) => string[] }[];
  reconcile: (key: string) => Promise<ReconcileResult | undefined>;
  /** Every primary object is reconciled this often even when nothing is seen to change (drift). */
  resyncMs: number;
  concurrency?: number;
}

/**
 * A running controller: the informers' events feed its work queue, which runs at most one reconcile
 * per key at a time and retries failures with backoff. Controllers start only in the leader.
 */
export class Controller {
  private readonly queue: WorkQueue;
  private resyncTimer: NodeJS.Timeout | undefined;
  private started = false;

  constructor(
    private readonly spec: ControllerSpec,
    private readonly log: Logger,
    metrics: OperatorMetrics,
  ) {
    this.queue = new WorkQueue(spec.reconcile, {
      concurrency: spec.concurrency ?? 2,
      onResult: (result, seconds, error) => {
        metrics.reconciles.inc({ controller: spec.name, result });
        metrics.reconcileSeconds.observe({ controller: spec.name }, seconds);
        metrics.queueDepth.set({ controller: spec.name }, this.queue.depth);
        if (error !== undefined) {
          log.warn(
            { controller: spec.name, err: (error as Error).message },
            "reconcile failed; retrying with backoff",
          );
        }
      },
    });
    spec.primary.on((_event, object) => this.enqueue(keyOf(object)));
    for (const source of spec.secondary) {
      source.informer.on((_event, object) => {
        for (const key of source.keys(object)) this.enqueue(key);
      });
    }
  }

  /** Starts reconciling: every object the primary informer holds, then whatever changes. */
  start(): void {
    this.started = true;
    this.resyncAll();
    this.resyncTimer = setInterval(() => this.resyncAll(), this.spec.resyncMs);
    this.resyncTimer.unref();
    this.log.info({ controller: this.spec.name }, "controller started");
  }

  async stop(): Promise<void> {
    this.started = false;
    clearInterval(this.resyncTimer);
    await this.queue.stop();
  }

  private enqueue(key: string): void {
    if (this.started) this.queue.add(key);
  }

  private resyncAll(): void {
    for (const object of this.spec.primary.list()) this.enqueue(keyOf(object));
  }
}
