import { randomBytes } from "node:crypto";
import type { KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "pino";
import type { Coordinator } from "./api/v1alpha1/coordinator-types.js";
import type { ProviderRelease } from "./api/v1alpha1/provider-release-types.js";
import { LABEL_MANAGED_BY } from "./api/v1alpha1/well-known.js";
import { CoordinatorReconciler } from "./controllers/coordinator/controller.js";
import { CoordinatorAdmin, clusterDns, type ServiceResolver } from "./controllers/coordinator-admin.js";
import { ProviderReleaseReconciler } from "./controllers/provider-release/controller.js";
import {
  COORDINATORS,
  DEPLOYMENTS,
  JOBS,
  POD_DISRUPTION_BUDGETS,
  PROVIDER_RELEASES,
  SECRETS,
  SERVICES,
} from "./resource-types.js";
import { Controller, keyOf } from "./runtime/controller.js";
import { EventRecorder } from "./runtime/events.js";
import { Informer } from "./runtime/informer.js";
import { KubeApi, type KubeObject, type ResourceType } from "./runtime/kube-api.js";
import { LeaderElector } from "./runtime/leader-election.js";
import { OperatorMetrics } from "./runtime/metrics.js";

export interface OperatorOptions {
  kubeConfig: KubeConfig;
  log: Logger;
  /** Watch and manage one namespace; every namespace when absent. */
  namespace?: string | undefined;
  /** Leader election (several operator replicas: one reconciles); off runs the controllers at once. */
  leaderElection?:
    | {
        namespace: string;
        name: string;
        leaseDurationMs: number;
        renewDeadlineMs: number;
        retryPeriodMs: number;
      }
    | undefined;
  /** This process's identity in the lease and in events (default: host name + random suffix). */
  identity?: string;
  /** How coordinators' Services are reached for admin calls (default: cluster DNS). */
  resolveService?: ServiceResolver;
  /** Reconciles of different objects that may run at once, per controller (default 2). */
  concurrency?: number;
  /** Told when leadership is lost: a process must then exit (its caches may be stale and others lead). */
  onLostLeadership?: () => void;
}

export interface RunningOperator {
  readonly metrics: OperatorMetrics;
  readonly identity: string;
  isLeader(): boolean;
  /** Whether the controllers run with synced caches (a follower is never "running"). */
  isReconciling(): boolean;
  /** Stops the controllers and informers and releases the lease. */
  close(): Promise<void>;
}

/** Objects the operator made carry this label: its informers watch only those. */
const OWNED = `${LABEL_MANAGED_BY}=darkbloom-operator`;

/**
 * The operator: informers over the resources it manages (one cache per type, shared by both
 * controllers), the Coordinator and ProviderRelease controllers, and — with several replicas — a
 * leader lease that decides which one runs them.
 */
export async function startOperator(options: OperatorOptions): Promise<RunningOperator> {
  const { kubeConfig, log } = options;
  const identity =
    options.identity ?? `${process.env.HOSTNAME ?? "operator"}_${randomBytes(4).toString("hex")}`;
  const metrics = new OperatorMetrics();
  const api = new KubeApi(kubeConfig, (verb, resource, code) =>
    metrics.apiRequests.inc({ verb, resource, code: String(code) }),
  );
  const informer = <T extends KubeObject>(type: ResourceType, labelSelector?: string) =>
    new Informer<T>(kubeConfig, api, type, log, {
      namespace: options.namespace,
      ...(labelSelector ? { labelSelector } : {}),
      onRestart: () => metrics.informerRestarts.inc({ resource: type.plural }),
    });
  const coordinators = informer<Coordinator & KubeObject>(COORDINATORS);
  const releases = informer<ProviderRelease & KubeObject>(PROVIDER_RELEASES);
  const deployments = informer(DEPLOYMENTS, OWNED);
  const jobs = informer(JOBS, OWNED);
  const services = informer(SERVICES, OWNED);
  const budgets = informer(POD_DISRUPTION_BUDGETS, OWNED);
  // Every Secret, not only the operator's: Coordinators reference the platform team's Secrets.
  const secrets = informer(SECRETS);
  const informers = [coordinators, releases, deployments, jobs, services, budgets, secrets];

  const events = new EventRecorder(api, log, identity);
  const admin = new CoordinatorAdmin(options.resolveService ?? clusterDns);
  const coordinatorReconciler = new CoordinatorReconciler({
    api,
    coordinators,
    deployments,
    jobs,
    services,
    budgets,
    secrets,
    events,
    log,
  });
  const releaseReconciler = new ProviderReleaseReconciler({
    api,
    releases,
    coordinators,
    secrets,
    admin,
    events,
    log,
  });

  const ownerKeys = (object: KubeObject): string[] =>
    (object.metadata?.ownerReferences ?? [])
      .filter((ref) => ref.kind === COORDINATORS.kind && ref.controller)
      .map((ref) => `${object.metadata?.namespace ?? ""}/${ref.name}`);
  const referencing =
    <T extends KubeObject>(from: Informer<T>, refersTo: (object: T, name: string) => boolean) =>
    (object: KubeObject): string[] =>
      from
        .list(object.metadata?.namespace)
        .filter((candidate) => refersTo(candidate, object.metadata?.name ?? ""))
        .map(keyOf);
  const controllers = [
    new Controller(
      {
        name: "coordinator",
        primary: coordinators,
        secondary: [
          { informer: deployments, keys: ownerKeys },
          { informer: jobs, keys: ownerKeys },
          { informer: services, keys: ownerKeys },
          { informer: budgets, keys: ownerKeys },
          {
            informer: secrets,
            // The Secrets a Coordinator references (database URL, admin key, TLS certificate) and
            // its own peer Secret.
            keys: (secret) => [
              ...ownerKeys(secret),
              ...referencing(coordinators, (c, name) =>
                [
                  c.spec.database.secretRef.name,
                  c.spec.adminKeySecretRef.name,
                  c.spec.tls?.secretName,
                ].includes(name),
              )(secret),
            ],
          },
        ],
        reconcile: (key) => coordinatorReconciler.reconcile(key),
        resyncMs: 10 * 60_000,
        concurrency: options.concurrency ?? 2,
      },
      log,
      metrics,
    ),
    new Controller(
      {
        name: "providerrelease",
        primary: releases,
        secondary: [
          // A coordinator becoming ready (or going) changes whether its releases can sync.
          {
            informer: coordinators,
            keys: referencing(releases, (r, name) => r.spec.coordinatorRef.name === name),
          },
          {
            informer: secrets,
            keys: (secret) =>
              coordinators
                .list(secret.metadata?.namespace)
                // The admin key, and the TLS Secret whose ca.crt the admin calls trust.
                .filter((c) =>
                  [c.spec.adminKeySecretRef.name, c.spec.tls?.secretName].includes(secret.metadata?.name),
                )
                .flatMap((c) => referencing(releases, (r, name) => r.spec.coordinatorRef.name === name)(c)),
          },
        ],
        reconcile: (key) => releaseReconciler.reconcile(key),
        resyncMs: 10 * 60_000,
        concurrency: options.concurrency ?? 2,
      },
      log,
      metrics,
    ),
  ];

  let reconciling = false;
  let closed = false;
  const startControllers = async () => {
    await Promise.all(informers.map((i) => i.start()));
    if (closed) return;
    for (const controller of controllers) controller.start();
    reconciling = true;
  };
  const stopControllers = async () => {
    reconciling = false;
    await Promise.all(controllers.map((c) => c.stop()));
    await Promise.all(informers.map((i) => i.stop()));
  };

  let elector: LeaderElector | undefined;
  if (options.leaderElection) {
    elector = new LeaderElector(api, { ...options.leaderElection, identity }, log, {
      onStartedLeading: () => {
        metrics.leader.set(1);
        startControllers().catch((error: unknown) =>
          log.error({ err: (error as Error).message }, "could not start the controllers"),
        );
      },
      onStoppedLeading: () => {
        metrics.leader.set(0);
        void stopControllers();
        options.onLostLeadership?.();
      },
    });
    elector.start();
  } else {
    await startControllers();
  }

  return {
    metrics,
    identity,
    isLeader: () => elector?.isLeader ?? true,
    isReconciling: () => reconciling,
    close: async () => {
      closed = true;
      await stopControllers();
      await elector?.stop();
      metrics.leader.set(0);
    },
  };
}
