/**
 * The ReplicaSet controller (pkg/controller/replicaset): keeps `spec.replicas` active pods owned by each
 * ReplicaSet, creating `<rs>-<5 random>` pods from the template and deleting the cheapest ones first
 * (controller.ActivePodsWithRanks), and reports replicas, readyReplicas and availableReplicas (ready for
 * minReadySeconds) with observedGeneration.
 */
import { isConflict, isNotFound, type KubeClient, PODS, REPLICASETS } from "./client.js";
import { Controller } from "./controller-base.js";
import { Expectations } from "./expectations.js";
import type { InformerFactory } from "./informer.js";
import type { Pod, PodTemplateSpec, ReplicaSet } from "./types.js";
import {
  availableAt,
  clone,
  compareForDeletion,
  controllerRef,
  deepEqual,
  isPodActive,
  isPodAvailable,
  isPodReady,
  omitZero,
  ownerRefFor,
  randomSuffix,
  selectorMatches,
} from "./util.js";
import type { SyncResult } from "./workqueue.js";

/** controller.GetPodFromTemplate: a pod named `<prefix><5 random>` with the template's metadata. */
export function podFromTemplate(
  template: PodTemplateSpec,
  namespace: string,
  prefix: string,
  owner: Parameters<typeof ownerRefFor>,
  extraLabels: Record<string, string> = {},
): Pod {
  const meta = template.metadata ?? {};
  const pod: Pod = {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name: `${prefix}${randomSuffix()}`,
      generateName: prefix,
      namespace,
      labels: { ...(meta.labels ?? {}), ...extraLabels },
      ownerReferences: [ownerRefFor(...owner)],
    },
    spec: clone(template.spec),
  };
  if (meta.annotations) pod.metadata.annotations = { ...meta.annotations };
  if (meta.finalizers) pod.metadata.finalizers = [...meta.finalizers];
  return pod;
}

export class ReplicaSetController extends Controller<ReplicaSet> {
  private readonly expectations = new Expectations();
  private readonly pods = this.informers.get<Pod>(PODS);

  constructor(informers: InformerFactory, client: KubeClient, log: (line: string) => void) {
    super("replicaset-controller", REPLICASETS, informers, client, log);
    this.watchOwnedPods(this.pods, "ReplicaSet", this.expectations);
  }

  protected async sync(key: string): Promise<SyncResult> {
    const [namespace = "", name = ""] = key.split("/");
    const rs = this.primary.get(namespace, name);
    if (!rs) {
      this.expectations.forget(key);
      return undefined;
    }
    const owned = this.pods
      .list(namespace)
      .filter(
        (p) =>
          controllerRef(p)?.uid === rs.metadata.uid && selectorMatches(rs.spec.selector, p.metadata.labels),
      );
    const active = owned.filter(isPodActive);
    let requeue: SyncResult;
    if (this.expectations.satisfied(key) && !rs.metadata.deletionTimestamp) {
      await this.manageReplicas(key, rs, active);
    } else if (!this.expectations.satisfied(key)) {
      requeue = { requeueAfterMs: 1000 };
    }
    return (await this.updateStatus(rs, active)) ?? requeue;
  }

  private async manageReplicas(key: string, rs: ReplicaSet, active: Pod[]): Promise<void> {
    const want = rs.spec.replicas ?? 1;
    const namespace = rs.metadata.namespace ?? "";
    const diff = active.length - want;
    if (diff < 0) {
      const pods = Array.from({ length: -diff }, () =>
        podFromTemplate(rs.spec.template, namespace, `${rs.metadata.name}-`, [rs, "apps/v1", "ReplicaSet"]),
      );
      for (const pod of pods) this.expectations.expectCreate(key, pod.metadata.name ?? "");
      const results = await Promise.allSettled(
        pods.map(async (pod) => {
          try {
            await this.client.create(PODS, namespace, pod);
          } catch (err) {
            this.expectations.createObserved(key, pod.metadata.name ?? "");
            throw err;
          }
        }),
      );
      const failed = results.find((r) => r.status === "rejected");
      if (failed) throw (failed as PromiseRejectedResult).reason;
      this.log(`replicaset-controller: ${key}: created ${pods.length} pod(s)`);
    } else if (diff > 0) {
      const victims = [...active].sort(compareForDeletion).slice(0, diff);
      for (const pod of victims) this.expectations.expectDelete(key, pod.metadata.name ?? "");
      const results = await Promise.allSettled(
        victims.map(async (pod) => {
          try {
            await this.client.delete(PODS, namespace, pod.metadata.name ?? "", {
              uid: pod.metadata.uid ?? "",
            });
          } catch (err) {
            this.expectations.deleteObserved(key, pod.metadata.name ?? "");
            if (!isNotFound(err) && !isConflict(err)) throw err;
          }
        }),
      );
      const failed = results.find((r) => r.status === "rejected");
      if (failed) throw (failed as PromiseRejectedResult).reason;
      this.log(`replicaset-controller: ${key}: deleted ${victims.map((p) => p.metadata.name).join(", ")}`);
    }
  }

  private async updateStatus(rs: ReplicaSet, active: Pod[]): Promise<SyncResult> {
    const minReady = rs.spec.minReadySeconds ?? 0;
    const now = Date.now();
    const templateLabels = rs.spec.template.metadata?.labels ?? {};
    const status = omitZero(
      {
        replicas: active.length,
        fullyLabeledReplicas: active.filter((p) =>
          Object.entries(templateLabels).every(([k, v]) => p.metadata.labels?.[k] === v),
        ).length,
        readyReplicas: active.filter(isPodReady).length,
        availableReplicas: active.filter((p) => isPodAvailable(p, minReady, now)).length,
        observedGeneration: rs.metadata.generation ?? 0,
        ...(rs.status?.conditions ? { conditions: rs.status.conditions } : {}),
      },
      ["fullyLabeledReplicas", "readyReplicas", "availableReplicas", "observedGeneration"],
    );
    if (!deepEqual(rs.status ?? {}, status)) {
      try {
        await this.client.update(REPLICASETS, { ...rs, status }, "status");
      } catch (err) {
        if (isNotFound(err)) return undefined;
        throw err;
      }
    }
    // Pods that are ready but not yet available become available with time alone: come back then.
    const pending = active
      .filter((p) => isPodReady(p) && !isPodAvailable(p, minReady, now))
      .map((p) => availableAt(p, minReady) ?? now + 1000);
    return pending.length ? { requeueAfterMs: Math.max(50, Math.min(...pending) - now + 50) } : undefined;
  }
}
