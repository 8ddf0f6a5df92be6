/**
 * The Deployment controller (pkg/controller/deployment), ported step for step: a Deployment owns
 * ReplicaSets named `<deployment>-<pod-template-hash>`; RollingUpdate grows the new one within maxSurge
 * and shrinks old ones while at least replicas - maxUnavailable stay available; Recreate scales old
 * ones to zero and waits for their pods to go; scaling mid-rollout is proportional; old ReplicaSets
 * beyond revisionHistoryLimit are deleted once the rollout completes; status carries the counts and
 * the Available and Progressing conditions, with progressDeadlineSeconds.
 */
import { DEPLOYMENTS, isNotFound, type KubeClient, PODS, REPLICASETS } from "./client.js";
import { Controller } from "./controller-base.js";
import {
  byCreation,
  byRevision,
  calculateStatus,
  computeHash,
  condition,
  DESIRED_REPLICAS,
  type DeploymentStatus,
  deploymentComplete,
  filterActive,
  findNewReplicaSet,
  getCondition,
  HASH_LABEL,
  MAX_REPLICAS,
  maxSurge,
  maxUnavailable,
  newRSNewReplicas,
  proportion,
  REVISION,
  replicasOf,
  revisionOf,
  rolloutStatus,
  rsReplicas,
  setNewReplicaSetAnnotations,
  stuckRequeueMs,
  sumSpec,
  sumStatus,
  wireStatus,
} from "./deployment-util.js";
import type { InformerFactory } from "./informer.js";
import type { Condition, Deployment, Pod, ReplicaSet } from "./types.js";
import { clone, controllerRef, deepEqual, ownerRefFor, setCondition } from "./util.js";
import type { SyncResult } from "./workqueue.js";

export class DeploymentController extends Controller<Deployment> {
  private readonly replicaSets = this.informers.get<ReplicaSet>(REPLICASETS);
  private readonly pods = this.informers.get<Pod>(PODS);

  constructor(informers: InformerFactory, client: KubeClient, log: (line: string) => void) {
    super("deployment-controller", DEPLOYMENTS, informers, client, log);
    this.replicaSets.onEvent((_e, rs) => {
      const ref = controllerRef(rs);
      if (ref?.kind === "Deployment") this.queue.add(`${rs.metadata.namespace}/${ref.name}`);
    });
    // Recreate waits for the old pods to be gone: their deletion is what lets it go on.
    this.pods.onEvent((event, pod) => {
      const ref = controllerRef(pod);
      if (event !== "delete" || ref?.kind !== "ReplicaSet") return;
      const rs = this.replicaSets.get(pod.metadata.namespace ?? "", ref.name);
      const owner = rs && controllerRef(rs);
      if (owner?.kind === "Deployment") this.queue.add(`${pod.metadata.namespace}/${owner.name}`);
    });
  }

  protected async sync(key: string): Promise<SyncResult> {
    const [namespace = "", name = ""] = key.split("/");
    const cached = this.primary.get(namespace, name);
    if (!cached) return undefined;
    // Defaults (replicas 1, RollingUpdate 25%/25%, ...) are read where used, never written back.
    const d = clone(cached);
    const rsList = this.replicaSets
      .list(namespace)
      .filter((rs) => controllerRef(rs)?.uid === d.metadata.uid)
      .map(clone);
    if (d.metadata.deletionTimestamp) {
      const { newRS, oldRSs } = await this.getAllReplicaSets(d, rsList, false);
      await this.syncDeploymentStatus(d, [...oldRSs, ...(newRS ? [newRS] : [])], newRS);
      return undefined;
    }
    await this.checkPausedConditions(d);
    if (d.spec.paused || this.isScalingEvent(d, rsList)) return this.syncScale(d, rsList);
    return d.spec.strategy?.type === "Recreate"
      ? this.rolloutRecreate(d, rsList)
      : this.rolloutRolling(d, rsList);
  }

  // ---- ReplicaSets -----------------------------------------------------------------------------------

  private async getAllReplicaSets(d: Deployment, rsList: ReplicaSet[], create: boolean) {
    const existing = findNewReplicaSet(d, rsList);
    const oldRSs = rsList.filter((rs) => rs !== existing);
    const newRS = await this.getNewReplicaSet(d, existing, oldRSs, create);
    return { newRS, oldRSs };
  }

  /** getNewReplicaSet: brings the new ReplicaSet's annotations up to date, or creates it. */
  private async getNewReplicaSet(
    d: Deployment,
    existing: ReplicaSet | undefined,
    oldRSs: ReplicaSet[],
    create: boolean,
  ): Promise<ReplicaSet | undefined> {
    const newRevision = Math.max(0, ...oldRSs.map(revisionOf)) + 1;
    const namespace = d.metadata.namespace ?? "";
    if (existing) {
      const changed = setNewReplicaSetAnnotations(d, existing, newRevision, true);
      if (changed || (existing.spec.minReadySeconds ?? 0) !== (d.spec.minReadySeconds ?? 0)) {
        existing.spec.minReadySeconds = d.spec.minReadySeconds ?? 0;
        Object.assign(existing, await this.client.update(REPLICASETS, existing));
      }
      await this.setDeploymentRevision(d, existing.metadata.annotations?.[REVISION] ?? "");
      if (!getCondition(d.status, "Progressing")) {
        const cond = condition(
          "Progressing",
          "True",
          "FoundNewReplicaSet",
          `Found new replica set "${existing.metadata.name}"`,
        );
        await this.writeStatus(d, {
          ...(d.status ?? {}),
          conditions: setCondition(d.status?.conditions ?? [], cond),
        });
      }
      return existing;
    }
    if (!create) return undefined;

    const hash = computeHash(d.spec.template, d.status?.collisionCount);
    const template = clone(d.spec.template);
    template.metadata = { ...(template.metadata ?? {}) };
    template.metadata.labels = { ...(template.metadata.labels ?? {}), [HASH_LABEL]: hash };
    const selector = clone(d.spec.selector);
    selector.matchLabels = { ...(selector.matchLabels ?? {}), [HASH_LABEL]: hash };
    const newRS: ReplicaSet = {
      apiVersion: "apps/v1",
      kind: "ReplicaSet",
      metadata: {
        name: `${d.metadata.name}-${hash}`,
        namespace,
        labels: { ...template.metadata.labels },
        ownerReferences: [ownerRefFor(d, "apps/v1", "Deployment")],
      },
      spec: { replicas: 0, minReadySeconds: d.spec.minReadySeconds ?? 0, selector, template },
    };
    newRS.spec.replicas = newRSNewReplicas(d, [...oldRSs, newRS], newRS);
    setNewReplicaSetAnnotations(d, newRS, newRevision, false);
    let created: ReplicaSet;
    try {
      created = await this.client.create(REPLICASETS, namespace, newRS);
      this.log(
        `deployment-controller: ${namespace}/${d.metadata.name}: created ${newRS.metadata.name} (${newRS.spec.replicas})`,
      );
    } catch (err) {
      if ((err as { status?: number }).status !== 409) throw err;
      const found = await this.client.get<ReplicaSet>(REPLICASETS, namespace, newRS.metadata.name ?? "");
      if (controllerRef(found)?.uid !== d.metadata.uid || !findNewReplicaSet(d, [found])) {
        // A hash collision: another template (or owner) already has this name. Try the next hash.
        await this.writeStatus(d, {
          ...(d.status ?? {}),
          collisionCount: (d.status?.collisionCount ?? 0) + 1,
        });
        throw new Error(`hash collision on ${newRS.metadata.name}`);
      }
      return found;
    }
    await this.setDeploymentRevision(d, String(newRevision));
    const cond = condition(
      "Progressing",
      "True",
      "NewReplicaSetCreated",
      `Created new replica set "${created.metadata.name}"`,
    );
    await this.writeStatus(d, {
      ...(d.status ?? {}),
      conditions: setCondition(d.status?.conditions ?? [], cond),
    });
    return created;
  }

  /** scaleReplicaSet: sets the size and the desired/max annotations; updates `rs` in place. */
  private async scaleReplicaSet(d: Deployment, rs: ReplicaSet, replicas: number): Promise<boolean> {
    const desired = String(replicasOf(d));
    const max = String(replicasOf(d) + maxSurge(d));
    const annotations = rs.metadata.annotations ?? {};
    const sizeChanged = rsReplicas(rs) !== replicas;
    if (!sizeChanged && annotations[DESIRED_REPLICAS] === desired && annotations[MAX_REPLICAS] === max)
      return false;
    const next = clone(rs);
    next.spec.replicas = replicas;
    next.metadata.annotations = { ...annotations, [DESIRED_REPLICAS]: desired, [MAX_REPLICAS]: max };
    Object.assign(rs, await this.client.update(REPLICASETS, next));
    if (sizeChanged)
      this.log(`deployment-controller: scaled ${rs.metadata.namespace}/${rs.metadata.name} to ${replicas}`);
    return sizeChanged;
  }

  /** isScalingEvent: an active ReplicaSet was sized for another replica count. */
  private isScalingEvent(d: Deployment, rsList: ReplicaSet[]): boolean {
    return filterActive(rsList).some((rs) => {
      const desired = rs.metadata.annotations?.[DESIRED_REPLICAS];
      return desired !== undefined && Number(desired) !== replicasOf(d);
    });
  }

  // ---- strategies ------------------------------------------------------------------------------------

  private async rolloutRolling(d: Deployment, rsList: ReplicaSet[]): Promise<SyncResult> {
    const { newRS, oldRSs } = await this.getAllReplicaSets(d, rsList, true);
    if (!newRS) throw new Error("no new ReplicaSet");
    const allRSs = [...oldRSs, newRS];
    // reconcileNewReplicaSet
    if (rsReplicas(newRS) > replicasOf(d)) {
      if (await this.scaleReplicaSet(d, newRS, replicasOf(d)))
        return this.syncRolloutStatus(d, allRSs, newRS);
    } else if (rsReplicas(newRS) < replicasOf(d)) {
      if (await this.scaleReplicaSet(d, newRS, newRSNewReplicas(d, allRSs, newRS))) {
        return this.syncRolloutStatus(d, allRSs, newRS);
      }
    }
    if (await this.reconcileOldReplicaSets(d, allRSs, filterActive(oldRSs), newRS)) {
      return this.syncRolloutStatus(d, allRSs, newRS);
    }
    if (deploymentComplete(d, calculateStatus(d, allRSs, newRS))) await this.cleanupDeployment(d, oldRSs);
    return this.syncRolloutStatus(d, allRSs, newRS);
  }

  /** reconcileOldReplicaSets: scale old ReplicaSets down while keeping replicas - maxUnavailable available. */
  private async reconcileOldReplicaSets(
    d: Deployment,
    allRSs: ReplicaSet[],
    oldRSs: ReplicaSet[],
    newRS: ReplicaSet,
  ) {
    if (sumSpec(oldRSs) === 0) return false;
    const minAvailable = replicasOf(d) - maxUnavailable(d);
    const newUnavailable = rsReplicas(newRS) - (newRS.status?.availableReplicas ?? 0);
    const maxScaledDown = sumSpec(allRSs) - minAvailable - newUnavailable;
    if (maxScaledDown <= 0) return false;
    // cleanupUnhealthyReplicas: unavailable old pods go first, they cost no availability.
    let cleaned = 0;
    for (const rs of [...oldRSs].sort(byCreation)) {
      if (cleaned >= maxScaledDown) break;
      const unhealthy = rsReplicas(rs) - (rs.status?.availableReplicas ?? 0);
      if (rsReplicas(rs) === 0 || unhealthy <= 0) continue;
      const down = Math.min(maxScaledDown - cleaned, unhealthy);
      await this.scaleReplicaSet(d, rs, rsReplicas(rs) - down);
      cleaned += down;
    }
    // scaleDownOldReplicaSetsForRollingUpdate
    let scaled = 0;
    const available = sumStatus(allRSs, "availableReplicas");
    if (available > minAvailable) {
      const total = available - minAvailable;
      for (const rs of [...oldRSs].sort(byCreation)) {
        if (scaled >= total) break;
        if (rsReplicas(rs) === 0) continue;
        const down = Math.min(rsReplicas(rs), total - scaled);
        await this.scaleReplicaSet(d, rs, rsReplicas(rs) - down);
        scaled += down;
      }
    }
    return cleaned + scaled > 0;
  }

  private async rolloutRecreate(d: Deployment, rsList: ReplicaSet[]): Promise<SyncResult> {
    let { newRS, oldRSs } = await this.getAllReplicaSets(d, rsList, false);
    const allRSs = () => [...oldRSs, ...(newRS ? [newRS] : [])];
    let scaledDown = false;
    for (const rs of filterActive(oldRSs)) if (await this.scaleReplicaSet(d, rs, 0)) scaledDown = true;
    if (scaledDown) return this.syncRolloutStatus(d, allRSs(), newRS);
    // oldPodsRunning: wait until no pod of an old ReplicaSet is left unfinished.
    const oldUids = new Set(oldRSs.map((rs) => rs.metadata.uid));
    const running =
      sumStatus(oldRSs, "replicas") > 0 ||
      this.pods.list(d.metadata.namespace).some((p) => {
        const ref = controllerRef(p);
        return ref && oldUids.has(ref.uid) && p.status?.phase !== "Succeeded" && p.status?.phase !== "Failed";
      });
    if (running) return this.syncRolloutStatus(d, allRSs(), newRS);
    if (!newRS) ({ newRS, oldRSs } = await this.getAllReplicaSets(d, rsList, true));
    if (!newRS) throw new Error("no new ReplicaSet");
    await this.scaleReplicaSet(d, newRS, replicasOf(d));
    if (deploymentComplete(d, calculateStatus(d, allRSs(), newRS))) await this.cleanupDeployment(d, oldRSs);
    return this.syncRolloutStatus(d, allRSs(), newRS);
  }

  /** sync: scaling (also of a paused Deployment), without rolling anything out. */
  private async syncScale(d: Deployment, rsList: ReplicaSet[]): Promise<SyncResult> {
    const { newRS, oldRSs } = await this.getAllReplicaSets(d, rsList, false);
    await this.scale(d, newRS, oldRSs);
    if (d.spec.paused) await this.cleanupDeployment(d, oldRSs);
    await this.syncDeploymentStatus(d, [...oldRSs, ...(newRS ? [newRS] : [])], newRS);
    return undefined;
  }

  private async scale(d: Deployment, newRS: ReplicaSet | undefined, oldRSs: ReplicaSet[]): Promise<void> {
    // FindActiveOrLatest: with one active ReplicaSet (or none), that one (or the newest) takes the change.
    const newestFirst = [...oldRSs].sort(byCreation).reverse();
    const active = filterActive([...newestFirst, newRS]);
    const single =
      active.length === 1 ? active[0] : active.length === 0 ? (newRS ?? newestFirst[0]) : undefined;
    if (single) {
      if (rsReplicas(single) !== replicasOf(d)) await this.scaleReplicaSet(d, single, replicasOf(d));
      return;
    }
    // IsSaturated: the new ReplicaSet is fully available, so the old ones can go.
    if (
      newRS &&
      rsReplicas(newRS) === replicasOf(d) &&
      newRS.metadata.annotations?.[DESIRED_REPLICAS] === String(replicasOf(d)) &&
      (newRS.status?.availableReplicas ?? 0) === replicasOf(d)
    ) {
      for (const rs of filterActive(oldRSs)) await this.scaleReplicaSet(d, rs, 0);
      return;
    }
    if (d.spec.strategy?.type === "Recreate") return;
    // Proportional scaling: spread the change over the active ReplicaSets by their size.
    const allowed = replicasOf(d) > 0 ? replicasOf(d) + maxSurge(d) : 0;
    const toAdd = allowed - sumSpec(active);
    const bySize = (newerFirst: boolean) => (a: ReplicaSet, b: ReplicaSet) =>
      rsReplicas(b) - rsReplicas(a) || (newerFirst ? byCreation(b, a) : byCreation(a, b));
    active.sort(bySize(toAdd > 0));
    const sizes = new Map<ReplicaSet, number>();
    let added = 0;
    for (const rs of active) {
      const p = toAdd !== 0 ? proportion(rs, d, toAdd, added) : 0;
      sizes.set(rs, rsReplicas(rs) + p);
      added += p;
    }
    for (const [i, rs] of active.entries()) {
      let size = sizes.get(rs) ?? rsReplicas(rs);
      if (i === 0 && toAdd !== 0) size = Math.max(0, size + toAdd - added);
      await this.scaleReplicaSet(d, rs, size);
    }
  }

  /** cleanupDeployment: delete the oldest idle ReplicaSets beyond revisionHistoryLimit. */
  private async cleanupDeployment(d: Deployment, oldRSs: ReplicaSet[]): Promise<void> {
    const cleanable = oldRSs.filter((rs) => !rs.metadata.deletionTimestamp).sort(byRevision);
    const diff = cleanable.length - (d.spec.revisionHistoryLimit ?? 10);
    for (const rs of cleanable.slice(0, Math.max(0, diff))) {
      if ((rs.status?.replicas ?? 0) !== 0 || rsReplicas(rs) !== 0) continue;
      if ((rs.metadata.generation ?? 0) > (rs.status?.observedGeneration ?? 0)) continue;
      try {
        await this.client.delete(REPLICASETS, rs.metadata.namespace ?? "", rs.metadata.name ?? "", {
          uid: rs.metadata.uid ?? "",
        });
        this.log(`deployment-controller: deleted old ${rs.metadata.namespace}/${rs.metadata.name}`);
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
  }

  // ---- status ------------------------------------------------------------------------------------------

  /** checkPausedConditions: Progressing Unknown with DeploymentPaused / DeploymentResumed. */
  private async checkPausedConditions(d: Deployment): Promise<void> {
    const cond = getCondition(d.status, "Progressing");
    if (cond?.reason === "ProgressDeadlineExceeded") return;
    const pausedCond = cond?.reason === "DeploymentPaused";
    let next: Condition | undefined;
    if (d.spec.paused && !pausedCond)
      next = condition("Progressing", "Unknown", "DeploymentPaused", "Deployment is paused");
    else if (!d.spec.paused && pausedCond) {
      next = condition("Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed");
    }
    if (next)
      await this.writeStatus(d, {
        ...(d.status ?? {}),
        conditions: setCondition(d.status?.conditions ?? [], next),
      });
  }

  private async syncDeploymentStatus(d: Deployment, allRSs: ReplicaSet[], newRS: ReplicaSet | undefined) {
    const status = calculateStatus(d, allRSs, newRS);
    if (!deepEqual(wireStatus(status), d.status ?? {})) await this.writeStatus(d, status);
  }

  /** syncRolloutStatus: the counts plus the Progressing condition, and a wake-up at the progress deadline. */
  private async syncRolloutStatus(d: Deployment, allRSs: ReplicaSet[], newRS: ReplicaSet | undefined) {
    const status = rolloutStatus(d, allRSs, newRS);
    if (!deepEqual(wireStatus(status), d.status ?? {})) {
      await this.writeStatus(d, status);
      return undefined;
    }
    const after = stuckRequeueMs(d, status);
    return after === undefined ? undefined : { requeueAfterMs: after };
  }

  /** SetDeploymentRevision: the Deployment carries the revision of its new ReplicaSet. */
  private async setDeploymentRevision(d: Deployment, revision: string): Promise<void> {
    if (!revision || d.metadata.annotations?.[REVISION] === revision) return;
    const patch = { metadata: { annotations: { [REVISION]: revision } } };
    const updated = await this.client.mergePatch<Deployment>(
      DEPLOYMENTS,
      d.metadata.namespace ?? "",
      d.metadata.name ?? "",
      patch,
    );
    d.metadata.annotations = { ...(d.metadata.annotations ?? {}), [REVISION]: revision };
    d.metadata.resourceVersion = updated.metadata.resourceVersion ?? "";
  }

  /** UpdateStatus with the Deployment's resourceVersion; a stale cache is a conflict and a retry. */
  private async writeStatus(d: Deployment, status: DeploymentStatus): Promise<void> {
    const wire = wireStatus(status);
    const updated = await this.client.update<Deployment>(DEPLOYMENTS, { ...d, status: wire }, "status");
    d.metadata.resourceVersion = updated.metadata.resourceVersion ?? "";
    d.status = wire;
  }
}
