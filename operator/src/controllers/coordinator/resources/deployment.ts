import type { V1Container, V1Deployment, V1Probe, V1Volume, V1VolumeMount } from "@kubernetes/client-node";
import { COORDINATOR_HTTP_PORT, type Coordinator } from "../../../api/v1alpha1/coordinator-types.js";
import { ANNOTATION_CONFIG_HASH } from "../../../api/v1alpha1/well-known.js";
import { TLS_CERT_KEY, TLS_KEY_KEY } from "../../tls-secret.js";
import { coordinatorEnv, type PeerEnvOptions } from "./config-env.js";
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

/** Where `spec.tls`'s Secret is mounted: a whole-directory mount, which the kubelet updates in place. */
export const TLS_DIR = "/etc/darkbloom/tls";
const TLS_VOLUME = "tls";
/** Where `spec.tpm`'s EK CA ConfigMap is mounted (a directory mount too: the coordinator re-reads it). */
export const TPM_EK_CA_DIR = "/etc/darkbloom/tpm-ek-ca";
const TPM_EK_CA_FILE = "ek-ca.pem";
const TPM_EK_CA_VOLUME = "tpm-ek-ca";

/**
 * `coordinator serve`'s arguments. It listens on the pod IP (probes and peers dial it there), checks
 * the schema instead of migrating it (the migration Job did, once, before the rollout), and takes
 * the log level as a flag since serve has no variable for it. With TLS the certificate comes from
 * the Secret volume (reloaded when the kubelet updates it) and the peer port stays plaintext: peers
 * dial pod IPs, which the certificate does not name (the schema makes tls require peerPort).
 */
export function serveArgs(coordinator: Coordinator): string[] {
  const { metrics, config, tls, tpm } = coordinator.spec;
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
    ...(tls
      ? [
          "--tls-cert",
          `${TLS_DIR}/${TLS_CERT_KEY}`,
          "--tls-key",
          `${TLS_DIR}/${TLS_KEY_KEY}`,
          "--peer-plaintext",
        ]
      : []),
    ...(tpm ? ["--tpm-ek-ca", `${TPM_EK_CA_DIR}/${TPM_EK_CA_FILE}`] : []),
    ...(tpm?.pcrAllow?.length ? ["--tpm-pcr-allow", tpm.pcrAllow.join(",")] : []),
    ...(config?.logLevel ? ["--log-level", config.logLevel] : []),
  ];
}

/**
 * Every probe allows 2 s: a replica busy streaming answers late without being dead. Over TLS the
 * kubelet speaks HTTPS and, as it always does, does not verify the certificate.
 */
function httpProbe(
  coordinator: Coordinator,
  path: string,
  periodSeconds: number,
  failureThreshold: number,
): V1Probe {
  const scheme = coordinator.spec.tls ? { scheme: "HTTPS" } : {};
  return { httpGet: { path, port: "http", ...scheme }, periodSeconds, failureThreshold, timeoutSeconds: 2 };
}

/** The TLS Secret's certificate and key only (not its ca.crt), readable by the non-root user. */
function tlsVolume(coordinator: Coordinator): V1Volume[] {
  const { tls } = coordinator.spec;
  if (!tls) return [];
  const items = [TLS_CERT_KEY, TLS_KEY_KEY].map((key) => ({ key, path: key }));
  return [{ name: TLS_VOLUME, secret: { secretName: tls.secretName, items, defaultMode: 0o444 } }];
}

/** A directory mount, not subPath: subPath mounts never see the Secret's updates. */
function tlsVolumeMount(coordinator: Coordinator): V1VolumeMount[] {
  return coordinator.spec.tls ? [{ name: TLS_VOLUME, mountPath: TLS_DIR, readOnly: true }] : [];
}

/** The EK CA bundle under a fixed file name, whatever its key; not optional: a typo fails the pod. */
function tpmVolume(coordinator: Coordinator): V1Volume[] {
  const { tpm } = coordinator.spec;
  if (!tpm) return [];
  const items = [{ key: tpm.ekCaKey ?? "ca.pem", path: TPM_EK_CA_FILE }];
  return [{ name: TPM_EK_CA_VOLUME, configMap: { name: tpm.ekCaConfigMap, items, defaultMode: 0o444 } }];
}

function tpmVolumeMount(coordinator: Coordinator): V1VolumeMount[] {
  return coordinator.spec.tpm ? [{ name: TPM_EK_CA_VOLUME, mountPath: TPM_EK_CA_DIR, readOnly: true }] : [];
}

function coordinatorContainer(coordinator: Coordinator, peer: PeerEnvOptions): V1Container {
  const { spec } = coordinator;
  return {
    name: COORDINATOR_CONTAINER,
    image: spec.image,
    ...(spec.imagePullPolicy ? { imagePullPolicy: spec.imagePullPolicy } : {}),
    args: serveArgs(coordinator),
    env: coordinatorEnv(coordinator, peer),
    ports: [
      { name: "http", containerPort: COORDINATOR_HTTP_PORT, protocol: "TCP" },
      { name: "metrics", containerPort: spec.metrics.port, protocol: "TCP" },
      ...(spec.peerPort ? [{ name: "peer", containerPort: spec.peerPort, protocol: "TCP" }] : []),
    ],
    // Not ready while draining or while the database does not answer: traffic goes elsewhere.
    readinessProbe: httpProbe(coordinator, "/readyz", 5, 2),
    livenessProbe: httpProbe(coordinator, "/healthz", 10, 3),
    // Up to two minutes to start (connecting to the database, loading the catalog) before liveness.
    startupProbe: httpProbe(coordinator, "/healthz", 2, 60),
    lifecycle: { preStop: { sleep: { seconds: PRE_STOP_SECONDS } } },
    resources: resourceRequirements(coordinator),
    securityContext: securityContext(),
    volumeMounts: [dataVolumeMount(), ...tlsVolumeMount(coordinator), ...tpmVolumeMount(coordinator)],
  };
}

/**
 * The replicas. A rollout adds one new pod before removing an old one (maxUnavailable 0), so
 * providers always have somewhere to reconnect to; a replica gets preStop, then its drain, then some
 * slack before it is killed.
 */
export function buildDeployment(
  coordinator: Coordinator,
  options: PeerEnvOptions & { configHash: string },
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
          containers: [
            coordinatorContainer(coordinator, {
              peerSecretName: options.peerSecretName,
              previousPeerToken: options.previousPeerToken,
            }),
          ],
          volumes: [dataVolume(), ...tlsVolume(coordinator), ...tpmVolume(coordinator)],
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
