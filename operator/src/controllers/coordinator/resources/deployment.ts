import type { V1Container, V1Deployment, V1Probe } from "@kubernetes/client-node";
import { COORDINATOR_HTTP_PORT, type Coordinator } from "../../../api/v1alpha1/coordinator-types.js";
import { ANNOTATION_CONFIG_HASH } from "../../../api/v1alpha1/well-known.js";
import { coordinatorEnv } from "./config-env.js";
import { identity, labels, ownedMeta, selectorLabels } from "./labels.js";
import {
  DATA_DIR,
  dataVolume,
  dataVolumeMount,
  podPlacement,
  resourceRequirements,
  securityContext,
} from "./pod-common.js";

export const COORDINATOR_CONTAINER = "coordinator";

/** Seconds preStop waits before SIGTERM: endpoints controllers and proxies drop the pod meanwhile. */
const PRE_STOP_SECONDS = 5;
/** Slack between the coordinator's drain deadline and the kubelet's SIGKILL, to close cleanly. */
const SHUTDOWN_SLACK_SECONDS = 10;

/**
 * `coordinator serve`'s arguments. It listens on the pod IP (probes and peers dial it there), checks
 * the schema instead of migrating it (the migration Job did, once, before the rollout), and takes
 * the log level as a flag since serve has no variable for it.
 */
export function serveArgs(coordinator: Coordinator): string[] {
  const { metrics, config } = coordinator.spec;
  return [
    "serve",
    "--host",
    "$(POD_IP)",
    "--port",
    String(COORDINATOR_HTTP_PORT),
    "--metrics-port",
    String(metrics.port),
    "--metrics-host",
    "$(POD_IP)",
    "--data-dir",
    DATA_DIR,
    "--schema",
    "check",
    ...(coordinator.spec.peerPort ? ["--peer-port", String(coordinator.spec.peerPort)] : []),
    ...(config?.logLevel ? ["--log-level", config.logLevel] : []),
  ];
}

/** Every probe allows 2 s: a replica busy streaming answers late without being dead. */
function httpProbe(path: string, periodSeconds: number, failureThreshold: number): V1Probe {
  return { httpGet: { path, port: "http" }, periodSeconds, failureThreshold, timeoutSeconds: 2 };
}

function coordinatorContainer(coordinator: Coordinator, peerSecretName: string): V1Container {
  const { spec } = coordinator;
  return {
    name: COORDINATOR_CONTAINER,
    image: spec.image,
    ...(spec.imagePullPolicy ? { imagePullPolicy: spec.imagePullPolicy } : {}),
    args: serveArgs(coordinator),
    env: coordinatorEnv(coordinator, { peerSecretName }),
    ports: [
      { name: "http", containerPort: COORDINATOR_HTTP_PORT, protocol: "TCP" },
      { name: "metrics", containerPort: spec.metrics.port, protocol: "TCP" },
      ...(spec.peerPort ? [{ name: "peer", containerPort: spec.peerPort, protocol: "TCP" }] : []),
    ],
    // Not ready while draining or while the database does not answer: traffic goes elsewhere.
    readinessProbe: httpProbe("/readyz", 5, 2),
    livenessProbe: httpProbe("/healthz", 10, 3),
    // Up to two minutes to start (connecting to the database, loading the catalog) before liveness.
    startupProbe: httpProbe("/healthz", 2, 60),
    lifecycle: { preStop: { sleep: { seconds: PRE_STOP_SECONDS } } },
    resources: resourceRequirements(coordinator),
    securityContext: securityContext(),
    volumeMounts: [dataVolumeMount()],
  };
}

/**
 * The replicas. A rollout adds one new pod before removing an old one (maxUnavailable 0), so
 * providers always have somewhere to reconnect to; a replica gets preStop, then its drain, then some
 * slack before it is killed.
 */
export function buildDeployment(
  coordinator: Coordinator,
  options: { peerSecretName: string; configHash: string },
): V1Deployment {
  const { spec } = coordinator;
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: ownedMeta(coordinator, identity(coordinator).name),
    spec: {
      replicas: spec.replicas,
      revisionHistoryLimit: 5,
      selector: { matchLabels: selectorLabels(coordinator) },
      strategy: { type: "RollingUpdate", rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
      template: {
        metadata: {
          // The operator's labels and annotation win over the user's, which the schema forbids anyway.
          labels: { ...spec.podLabels, ...labels(coordinator) },
          annotations: { ...spec.podAnnotations, [ANNOTATION_CONFIG_HASH]: options.configHash },
        },
        spec: {
          containers: [coordinatorContainer(coordinator, options.peerSecretName)],
          volumes: [dataVolume()],
          terminationGracePeriodSeconds: PRE_STOP_SECONDS + spec.drainSeconds + SHUTDOWN_SLACK_SECONDS,
          ...podPlacement(coordinator),
          ...(spec.scheduling?.topologySpreadConstraints
            ? { topologySpreadConstraints: spec.scheduling.topologySpreadConstraints }
            : {}),
          // The coordinator calls no Kubernetes API, and service environment variables would only
          // leak the namespace's other Services into its environment.
          enableServiceLinks: false,
          automountServiceAccountToken: false,
        },
      },
    },
  };
}
