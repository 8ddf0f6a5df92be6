/**
 * The wiring the fake cluster's controllers share, as the real ones in kube-controller-manager do: a
 * work queue of `<namespace>/<name>` keys of the kind the controller owns, fed by that kind's informer
 * and by a resync of every cached object (so that a lost event heals), and drained on stop. Each
 * controller adds its other informers (from the shared `informers`), their handlers and its `sync`.
 */
import type { KubeClient, ResourceType } from "./client.js";
import type { Expectations } from "./expectations.js";
import { type Informer, type InformerFactory, objectKey } from "./informer.js";
import type { KubeObject, Pod } from "./types.js";
import { controllerRef } from "./util.js";
import { type SyncResult, WorkQueue } from "./workqueue.js";

const RESYNC_MS = 10_000;

export abstract class Controller<T extends KubeObject> {
  protected readonly queue: WorkQueue;
  /** The informer of the kind the controller reconciles; `sync` gets that kind's keys. */
  protected readonly primary: Informer<T>;
  private resync: NodeJS.Timeout | undefined;

  protected constructor(
    name: string,
    type: ResourceType,
    protected readonly informers: InformerFactory,
    protected readonly client: KubeClient,
    protected readonly log: (line: string) => void,
  ) {
    this.queue = new WorkQueue(name, (key) => this.sync(key), log);
    this.primary = informers.get<T>(type);
    this.primary.onEvent((_event, obj) => this.queue.add(objectKey(obj)));
  }

  start(): void {
    this.resync = setInterval(() => {
      for (const obj of this.primary.list()) this.queue.add(objectKey(obj));
    }, RESYNC_MS);
  }

  async stop(): Promise<void> {
    clearInterval(this.resync);
    await this.queue.stop();
  }

  protected abstract sync(key: string): Promise<SyncResult>;

  /**
   * For controllers that create pods of their own (ReplicaSet, Job): each change to a pod they control
   * queues its owner and tells the expectations which creations and deletions the cache has now seen.
   */
  protected watchOwnedPods(pods: Informer<Pod>, ownerKind: string, expectations: Expectations): void {
    pods.onEvent((event, pod) => {
      const ref = controllerRef(pod);
      if (ref?.kind !== ownerKind) return;
      const key = `${pod.metadata.namespace}/${ref.name}`;
      const name = pod.metadata.name ?? "";
      if (event === "add") expectations.createObserved(key, name);
      if (event === "delete" || pod.metadata.deletionTimestamp) {
        expectations.createObserved(key, name);
        expectations.deleteObserved(key, name);
      }
      this.queue.add(key);
    });
  }
}
