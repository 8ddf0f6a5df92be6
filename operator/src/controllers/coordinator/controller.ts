import { createHash, createHmac } from "node:crypto";
import { isDeepStrictEqual } from "node:util";
import type { V1Deployment, V1Job } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { type Coordinator, CoordinatorReason } from "../../api/v1alpha1/coordinator-types.js";
import {
  COORDINATORS,
  DEPLOYMENTS,
  JOBS,
  POD_DISRUPTION_BUDGETS,
  SECRETS,
  SERVICES,
} from "../../resource-types.js";
import { splitKey } from "../../runtime/controller.js";
import type { EventRecorder } from "../../runtime/events.js";
import type { Informer } from "../../runtime/informer.js";
import {
  isAlreadyExists,
  isConflict,
  isNotFound,
  type KubeApi,
  type KubeObject,
  type ResourceType,
} from "../../runtime/kube-api.js";
import { applyOwned, type WriteOutcome } from "../../runtime/owned-objects.js";
import type { ReconcileResult } from "../../runtime/work-queue.js";
import { secretValue } from "../secret-values.js";
import { type TlsProblem, tlsSecretProblem } from "../tls-secret.js";
import {
  newPeerToken,
  type PeerSecret,
  PeerTokenRotation,
  type PeerTokenState,
  peerTokenState,
  rolledOutTo,
} from "./peer-token-rotation.js";
import { buildConfigHash } from "./resources/config-hash.js";
import { buildDeployment } from "./resources/deployment.js";
import { buildMigrationJob, migrationJobName } from "./resources/migration-job.js";
import { buildPeerSecret, peerSecretName } from "./resources/peer-secret.js";
import { buildPodDisruptionBudget } from "./resources/pod-disruption-budget.js";
import { buildService } from "./resources/service.js";
import { nextStatus, type Observed } from "./status.js";

type Object<T> = T & KubeObject;
export type CoordinatorObject = Object<Coordinator>;

export interface CoordinatorDeps {
  api: KubeApi;
  coordinators: Informer<CoordinatorObject>;
  deployments: Informer<KubeObject>;
  jobs: Informer<KubeObject>;
  services: Informer<KubeObject>;
  budgets: Informer<KubeObject>;
  secrets: Informer<KubeObject>;
  events: EventRecorder;
  log: Logger;
}

/** Migration Jobs kept besides the current image's: the latest few, for their logs. */
const KEPT_MIGRATION_JOBS = 2;

/**
 * Reconciles a Coordinator into the objects that run it, in the order an upgrade needs:
 *
 * 1. The Secrets it references must exist with their keys (the TLS Secret with a certificate and
 *    its key); otherwise Degraded, and nothing that runs is touched (a typo in a Secret name must
 *    not take a serving cluster down).
 * 2. The peer Secret (the replicas' shared forwarding credential) is made once and kept, until a
 *    rotation is asked for (peer-token-rotation.ts, whose steps follow the Deployment's rollout).
 * 3. The database is migrated by a Job of the spec's image, one Job per image; until it succeeds
 *    the Deployment keeps running the last migrated image, and a failed migration leaves it there
 *    (Degraded, MigrationFailed). The replicas start with `--schema check`: none ever migrates.
 * 4. The Deployment (rolling one pod at a time, surge 1, never below the desired count), the
 *    Service and the PodDisruptionBudget are brought to the spec, writing only what differs.
 * 5. The status is computed from what was observed and written only when it changed.
 */
export class CoordinatorReconciler {
  private readonly rotation: PeerTokenRotation;

  constructor(private readonly deps: CoordinatorDeps) {
    this.rotation = new PeerTokenRotation(deps);
  }

  async reconcile(key: string): Promise<ReconcileResult | undefined> {
    const { namespace, name } = splitKey(key);
    const coordinator = this.deps.coordinators.get(namespace, name);
    // Deleted: the garbage collector removes everything that carries its owner reference.
    if (coordinator === undefined || coordinator.metadata?.deletionTimestamp !== undefined) return undefined;
    const observed: Observed = { problem: undefined, migration: { state: "none" } };
    // A step that fails (the API server, a conflict) throws: the key is retried with backoff, and the
    // status keeps saying what the last complete reconcile found.
    try {
      await this.converge(coordinator, observed);
    } catch (error) {
      if (!(error instanceof NotOwnedError)) throw error;
      // A person must rename or remove the object: say so, and retry only when something changes.
      observed.problem = { reason: CoordinatorReason.NotOwned, message: error.message };
    }
    await this.writeStatus(coordinator, observed);
    return undefined;
  }

  private async converge(coordinator: CoordinatorObject, observed: Observed): Promise<void> {
    const namespace = coordinator.metadata?.namespace ?? "";
    const { spec } = coordinator;
    const databaseUrl = secretValue(
      this.deps.secrets,
      namespace,
      spec.database.secretRef.name,
      spec.database.secretRef.key,
    );
    const adminKey = secretValue(
      this.deps.secrets,
      namespace,
      spec.adminKeySecretRef.name,
      spec.adminKeySecretRef.key,
    );
    // The certificate's content is not in the config hash: a renewal reaches the pods through
    // their Secret volume, and the coordinator reloads it without a restart.
    const tlsProblem = spec.tls
      ? tlsSecretProblem(this.deps.secrets, namespace, spec.tls.secretName)
      : undefined;
    if (typeof databaseUrl !== "string" || typeof adminKey !== "string" || tlsProblem !== undefined) {
      observed.problem =
        typeof databaseUrl !== "string"
          ? databaseUrl
          : typeof adminKey !== "string"
            ? adminKey
            : (tlsProblem as TlsProblem);
      observed.deployment = this.owned(this.deps.deployments, coordinator, coordinator.metadata?.name) as
        | V1Deployment
        | undefined;
      return;
    }
    const peer = await this.ensurePeerSecret(coordinator);
    const { previous } = peer.state;
    // Pods roll when a referenced Secret's value changes: the hash covers them (never the values).
    // Without a previous peer token the digest is what it was before rotations existed.
    const secretsVersion = createHash("sha256")
      .update(`${databaseUrl}\u0000${adminKey}\u0000${peer.state.token}`)
      .update(previous === undefined ? "" : `\u0000${previous}`)
      .digest("hex");

    // The database is known by a keyed hash of its URL: the status and the Job's name must not carry
    // the URL, nor a plain hash against which a weak password could be guessed offline.
    const database = createHmac("sha256", adminKey).update(databaseUrl).digest("hex").slice(0, 16);
    const migratedImage = await this.migrate(coordinator, observed, database);
    const deploymentName = coordinator.metadata?.name ?? "";
    const deployment = this.owned(this.deps.deployments, coordinator, deploymentName) as
      | V1Deployment
      | undefined;
    let written = false;
    let configHash: string | undefined;
    if (migratedImage !== undefined) {
      const target = { ...coordinator, spec: { ...spec, image: migratedImage } };
      const previousPeerToken = previous !== undefined;
      configHash = buildConfigHash(target, secretsVersion, { previousPeerToken });
      const desired = buildDeployment(target, {
        peerSecretName: peerSecretName(coordinator),
        previousPeerToken,
        configHash,
      });
      const outcome = await this.apply(
        coordinator,
        DEPLOYMENTS,
        desired as KubeObject,
        deployment as KubeObject | undefined,
      );
      if (outcome !== "unchanged") {
        this.deps.log.info(
          { coordinator: deploymentName, namespace, outcome, image: migratedImage },
          "deployment written",
        );
        if (
          outcome === "updated" &&
          deployment?.spec?.template.spec?.containers[0]?.image !== migratedImage
        ) {
          void this.deps.events.record(
            coordinator,
            "Normal",
            "RollingOut",
            `rolling replicas to ${migratedImage}`,
          );
        }
        written = true;
      }
    }
    observed.deployment = deployment;
    // Just created or changed: rolling out until the watch brings the Deployment's new status.
    observed.deploymentPending = written || (migratedImage !== undefined && deployment === undefined);
    // The rotation's next step waits for every replica to run the pod template of the tokens as
    // they are now (the Secret's write brings another reconcile, which rolls the pods).
    await this.rotation.step(
      coordinator,
      peer.secret,
      !written && rolledOutTo(deployment as V1Deployment | undefined, configHash, spec.replicas),
    );

    const service = buildService(coordinator);
    await this.apply(
      coordinator,
      SERVICES,
      service as KubeObject,
      this.owned(this.deps.services, coordinator, service.metadata?.name),
      keepAllocated,
    );
    const budget = buildPodDisruptionBudget(coordinator);
    const currentBudget = this.owned(this.deps.budgets, coordinator, coordinator.metadata?.name);
    if (budget) await this.apply(coordinator, POD_DISRUPTION_BUDGETS, budget as KubeObject, currentBudget);
    else if (currentBudget)
      await this.deps.api.delete(
        POD_DISRUPTION_BUDGETS,
        namespace,
        deploymentName,
        currentBudget.metadata?.uid,
      );
  }

  /**
   * The image the Deployment may run: the spec's once its migration Job succeeded, else the last
   * one that migrated this database (undefined before the first migration of this database
   * completes: a Coordinator moved to a new database keeps its pods as they are until then).
   */
  private async migrate(
    coordinator: CoordinatorObject,
    observed: Observed,
    database: string,
  ): Promise<string | undefined> {
    const { image } = coordinator.spec;
    const sameDatabase = coordinator.status?.migratedDatabase === database;
    const previous = sameDatabase ? coordinator.status?.migratedImage : undefined;
    if (previous === image) {
      observed.migration = { state: "succeeded", image, database };
      return image;
    }
    const jobName = migrationJobName(coordinator, { image, database });
    const job = this.owned(this.deps.jobs, coordinator, jobName) as V1Job | undefined;
    if (job === undefined) {
      try {
        await this.deps.api.create(JOBS, buildMigrationJob(coordinator, database) as KubeObject);
        void this.deps.events.record(
          coordinator,
          "Normal",
          "MigrationStarted",
          `migrating the database for ${image} (Job ${jobName})`,
        );
      } catch (error) {
        // Made by an earlier reconcile the cache has not seen yet.
        if (!isAlreadyExists(error)) throw error;
      }
      observed.migration = { state: "running", image, job: jobName };
      return previous;
    }
    const finished = job.status?.conditions?.find(
      (c) => (c.type === "Complete" || c.type === "Failed") && c.status === "True",
    );
    if (finished?.type === "Complete") {
      observed.migration = { state: "succeeded", image, database };
      if (previous !== image) {
        void this.deps.events.record(
          coordinator,
          "Normal",
          "MigrationSucceeded",
          `the database is migrated for ${image}`,
        );
      }
      await this.pruneMigrationJobs(coordinator, jobName);
      return image;
    }
    if (finished?.type === "Failed") {
      const message = `migration Job ${jobName} failed (${finished.reason ?? "Failed"}: ${finished.message ?? "see its pods' logs"}); the replicas keep running ${previous ?? "nothing"}`;
      observed.migration = { state: "failed", image, job: jobName, message };
      return previous;
    }
    observed.migration = { state: "running", image, job: jobName };
    return previous;
  }

  /** Deletes migration Jobs beyond the current one and the latest few (their pods go with them). */
  private async pruneMigrationJobs(coordinator: CoordinatorObject, current: string): Promise<void> {
    const namespace = coordinator.metadata?.namespace ?? "";
    const uid = coordinator.metadata?.uid;
    const old = this.deps.jobs
      .list(namespace)
      .filter(
        (job) =>
          job.metadata?.name !== current && job.metadata?.ownerReferences?.some((ref) => ref.uid === uid),
      )
      .sort((a, b) =>
        String(b.metadata?.creationTimestamp).localeCompare(String(a.metadata?.creationTimestamp)),
      );
    for (const job of old.slice(KEPT_MIGRATION_JOBS)) {
      await this.deps.api.delete(JOBS, namespace, job.metadata?.name ?? "", job.metadata?.uid);
    }
  }

  /**
   * The peer Secret and its tokens, the Secret made the first time (a new token would split running
   * replicas; it changes only through a rotation).
   */
  private async ensurePeerSecret(
    coordinator: CoordinatorObject,
  ): Promise<{ secret: PeerSecret; state: PeerTokenState }> {
    const namespace = coordinator.metadata?.namespace ?? "";
    const name = peerSecretName(coordinator);
    const cached = this.deps.secrets.get(namespace, name) as PeerSecret | undefined;
    if (cached && !ownedBy(cached, coordinator)) throw notOwned(cached, name);
    const state = peerTokenState(cached);
    if (cached && state) return { secret: cached, state };
    const desired = buildPeerSecret(coordinator, newPeerToken()) as PeerSecret;
    try {
      const secret = await this.deps.api.create(SECRETS, desired);
      return { secret, state: peerTokenState(secret) as PeerTokenState };
    } catch (error) {
      if (!isAlreadyExists(error)) throw error;
      // Made by an earlier reconcile the cache has not seen yet: read it rather than guess.
      const secret = await this.deps.api.get<PeerSecret>(SECRETS, namespace, name);
      if (!ownedBy(secret, coordinator)) throw notOwned(secret, name);
      const read = peerTokenState(secret);
      if (!read) throw new Error(`Secret ${name} exists without a token`);
      return { secret, state: read };
    }
  }

  /**
   * applyOwned, and the case the caches cannot show: the informers see only objects the operator
   * labelled, so an object of the same name made by someone else is found by its create failing.
   */
  private async apply(
    coordinator: CoordinatorObject,
    type: ResourceType,
    desired: KubeObject,
    current: KubeObject | undefined,
    keep?: (current: KubeObject, next: KubeObject) => KubeObject,
  ): Promise<WriteOutcome> {
    try {
      return await applyOwned(this.deps.api, type, desired, current, keep);
    } catch (error) {
      if (!isAlreadyExists(error)) throw error;
      const name = desired.metadata?.name ?? "";
      const existing = await this.deps.api.get(type, coordinator.metadata?.namespace, name);
      if (!ownedBy(existing, coordinator)) throw notOwned(existing, name);
      // Ours, made by an earlier reconcile the cache has not seen yet: the next one compares.
      return "unchanged";
    }
  }

  /** An object in the cache, only if this Coordinator owns it (never adopt or change another's). */
  private owned(
    informer: Informer<KubeObject>,
    coordinator: CoordinatorObject,
    name: string | undefined,
  ): KubeObject | undefined {
    if (name === undefined) return undefined;
    const object = informer.get(coordinator.metadata?.namespace, name);
    if (object && !ownedBy(object, coordinator)) throw notOwned(object, name);
    return object;
  }

  private async writeStatus(coordinator: CoordinatorObject, observed: Observed): Promise<void> {
    const { status, events } = nextStatus(coordinator, observed, new Date());
    // Compared as values: the API server may return the keys of a custom resource in another order.
    if (isDeepStrictEqual(status, coordinator.status ?? {})) return;
    for (const event of events)
      void this.deps.events.record(coordinator, event.type, event.reason, event.message);
    try {
      await this.deps.api.update(COORDINATORS, { ...coordinator, status }, "status");
    } catch (error) {
      // A newer version is on its way through the watch; its reconcile writes the status then.
      if (!isConflict(error) && !isNotFound(error)) throw error;
    }
  }
}

/** An object of the name the Coordinator needs exists and is someone else's. */
class NotOwnedError extends Error {
  override readonly name = "NotOwnedError";
}

function notOwned(object: KubeObject, name: string): NotOwnedError {
  return new NotOwnedError(
    `${object.kind ?? "an object"} ${name} exists and is not owned by this Coordinator: rename or delete it`,
  );
}

function ownedBy(object: KubeObject, coordinator: CoordinatorObject): boolean {
  return object.metadata?.ownerReferences?.some((ref) => ref.uid === coordinator.metadata?.uid) === true;
}

/** A Service's cluster IPs are assigned by the API server and immutable: an update carries them over. */
function keepAllocated(current: KubeObject, next: KubeObject): KubeObject {
  const spec = (current as { spec?: Record<string, unknown> }).spec ?? {};
  const nextSpec = (next as { spec?: Record<string, unknown> }).spec ?? {};
  const allocated = ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "healthCheckNodePort"];
  const kept = Object.fromEntries(allocated.filter((k) => spec[k] !== undefined).map((k) => [k, spec[k]]));
  // Node ports too, matched by port name: a new one would break clients that use the old.
  type Port = { name?: string; nodePort?: number };
  const nodePorts = new Map(((spec.ports ?? []) as Port[]).map((p) => [p.name, p.nodePort]));
  const exposed = nextSpec.type === "NodePort" || nextSpec.type === "LoadBalancer";
  const ports = ((nextSpec.ports ?? []) as Port[]).map((p) =>
    exposed && p.nodePort === undefined && nodePorts.get(p.name) !== undefined
      ? { ...p, nodePort: nodePorts.get(p.name) }
      : p,
  );
  return { ...next, spec: { ...nextSpec, ...kept, ports } } as KubeObject;
}
