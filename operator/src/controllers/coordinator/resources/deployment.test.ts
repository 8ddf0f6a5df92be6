import { describe, expect, it } from "vitest";
import { storedCoordinator } from "../../../testing/coordinator-fixture.js";
import { coordinatorEnv } from "./config-env.js";
import { buildDeployment, serveArgs } from "./deployment.js";
import { labels, ownerReference, selectorLabels } from "./labels.js";

const OPTIONS = { peerSecretName: "main-peer", configHash: "0123456789abcdef" };

const SECURITY = {
  runAsNonRoot: true,
  runAsUser: 10001,
  runAsGroup: 10001,
  readOnlyRootFilesystem: true,
  allowPrivilegeEscalation: false,
  capabilities: { drop: ["ALL"] },
  seccompProfile: { type: "RuntimeDefault" },
};

describe("Deployment", () => {
  it("runs the replicas with a surge-only rollout, owned and labelled", () => {
    const coordinator = storedCoordinator({ replicas: 3 });
    const deployment = buildDeployment(coordinator, OPTIONS);
    expect(deployment.metadata).toEqual({
      name: "main",
      namespace: "darkbloom",
      labels: labels(coordinator),
      ownerReferences: [ownerReference(coordinator)],
    });
    expect(deployment.spec).toMatchObject({
      replicas: 3,
      revisionHistoryLimit: 5,
      selector: { matchLabels: selectorLabels(coordinator) },
      strategy: { type: "RollingUpdate", rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
    });
  });

  it("builds the coordinator container: args, env, ports, probes, preStop, security", () => {
    const coordinator = storedCoordinator({ imagePullPolicy: "IfNotPresent", metrics: { port: 9100 } });
    const pod = buildDeployment(coordinator, OPTIONS).spec?.template.spec;
    expect(pod?.containers).toHaveLength(1);
    expect(pod?.containers[0]).toEqual({
      name: "coordinator",
      image: "ghcr.io/darkbloom/coordinator:1.4.0",
      imagePullPolicy: "IfNotPresent",
      args: [
        "serve",
        "--host",
        "$(POD_IP)",
        "--port",
        "8080",
        "--metrics-port",
        "9100",
        "--metrics-host",
        "$(POD_IP)",
        "--data-dir",
        "/var/lib/darkbloom",
        "--schema",
        "check",
      ],
      env: coordinatorEnv(coordinator, { peerSecretName: "main-peer" }),
      ports: [
        { name: "http", containerPort: 8080, protocol: "TCP" },
        { name: "metrics", containerPort: 9100, protocol: "TCP" },
      ],
      readinessProbe: {
        httpGet: { path: "/readyz", port: "http" },
        periodSeconds: 5,
        failureThreshold: 2,
        timeoutSeconds: 2,
      },
      livenessProbe: {
        httpGet: { path: "/healthz", port: "http" },
        periodSeconds: 10,
        failureThreshold: 3,
        timeoutSeconds: 2,
      },
      startupProbe: {
        httpGet: { path: "/healthz", port: "http" },
        periodSeconds: 2,
        failureThreshold: 60,
        timeoutSeconds: 2,
      },
      lifecycle: { preStop: { sleep: { seconds: 5 } } },
      resources: {},
      securityContext: SECURITY,
      volumeMounts: [{ name: "data", mountPath: "/var/lib/darkbloom" }],
    });
    expect(
      pod?.containers[0]?.env?.find((v) => v.name === "DARKBLOOM_PEER_TOKEN")?.valueFrom?.secretKeyRef?.name,
    ).toBe("main-peer");
  });

  it("passes logLevel as serve's flag", () => {
    expect(serveArgs(storedCoordinator({ config: { logLevel: "debug" } })).slice(-2)).toEqual([
      "--log-level",
      "debug",
    ]);
    expect(serveArgs(storedCoordinator())).not.toContain("--log-level");
  });

  it("serves PeerService on the peer port when there is one, and advertises that port to the peers", () => {
    const coordinator = storedCoordinator({ peerPort: 8443 });
    const container = buildDeployment(coordinator, OPTIONS).spec?.template.spec?.containers[0];
    expect(container?.args).toEqual(expect.arrayContaining(["--peer-port", "8443"]));
    expect(container?.ports).toContainEqual({ name: "peer", containerPort: 8443, protocol: "TCP" });
    expect(container?.env).toContainEqual({
      name: "DARKBLOOM_ADVERTISE_URL",
      value: "http://$(POD_IP):8443",
    });
    const plain = buildDeployment(storedCoordinator(), OPTIONS).spec?.template.spec?.containers[0];
    expect(plain?.args).not.toContain("--peer-port");
    expect(plain?.env).toContainEqual({ name: "DARKBLOOM_ADVERTISE_URL", value: "http://$(POD_IP):8080" });
  });

  it("serves TLS from the Secret's volume, probes over HTTPS and keeps the peer port plaintext", () => {
    const coordinator = storedCoordinator({ peerPort: 8443, tls: { secretName: "main-tls" } });
    const pod = buildDeployment(coordinator, OPTIONS).spec?.template.spec;
    const container = pod?.containers[0];
    expect(container?.args?.slice(-5)).toEqual([
      "--tls-cert",
      "/etc/darkbloom/tls/tls.crt",
      "--tls-key",
      "/etc/darkbloom/tls/tls.key",
      "--peer-plaintext",
    ]);
    // Peers dial the pod IP on the plaintext peer port.
    expect(container?.env).toContainEqual({
      name: "DARKBLOOM_ADVERTISE_URL",
      value: "http://$(POD_IP):8443",
    });
    // A volume, not environment variables: the kubelet updates a mounted Secret in place, and the
    // coordinator reloads it; the certificate is never in the pod's spec or environment.
    expect(pod?.volumes).toEqual([
      { name: "data", emptyDir: {} },
      {
        name: "tls",
        secret: {
          secretName: "main-tls",
          items: [
            { key: "tls.crt", path: "tls.crt" },
            { key: "tls.key", path: "tls.key" },
          ],
          defaultMode: 0o444,
        },
      },
    ]);
    expect(container?.volumeMounts).toEqual([
      { name: "data", mountPath: "/var/lib/darkbloom" },
      { name: "tls", mountPath: "/etc/darkbloom/tls", readOnly: true },
    ]);
    expect(JSON.stringify(container?.env)).not.toContain("main-tls");
    for (const probe of [container?.readinessProbe, container?.livenessProbe, container?.startupProbe]) {
      expect(probe?.httpGet).toMatchObject({ port: "http", scheme: "HTTPS" });
    }
    const plain = buildDeployment(storedCoordinator({ peerPort: 8443 }), OPTIONS).spec?.template.spec;
    expect(plain?.containers[0]?.args).not.toContain("--peer-plaintext");
    expect(plain?.containers[0]?.readinessProbe?.httpGet).not.toHaveProperty("scheme");
  });

  it("mounts the TPM EK CA ConfigMap as a directory the coordinator re-reads, and passes the allowed boot states", () => {
    const digest = "ab".repeat(32);
    const coordinator = storedCoordinator({
      tpm: { ekCaConfigMap: "tpm-vendors", ekCaKey: "vendors.pem", pcrAllow: [digest] },
    });
    const pod = buildDeployment(coordinator, OPTIONS).spec?.template.spec;
    const container = pod?.containers[0];
    expect(container?.args).toEqual(
      expect.arrayContaining([
        "--tpm-ek-ca",
        "/etc/darkbloom/tpm-ek-ca/ek-ca.pem",
        "--tpm-pcr-allow",
        digest,
      ]),
    );
    expect(pod?.volumes).toContainEqual({
      name: "tpm-ek-ca",
      configMap: {
        name: "tpm-vendors",
        items: [{ key: "vendors.pem", path: "ek-ca.pem" }],
        defaultMode: 0o444,
      },
    });
    // A directory mount: the kubelet replaces a ConfigMap's files in place, never under a subPath.
    expect(container?.volumeMounts).toContainEqual({
      name: "tpm-ek-ca",
      mountPath: "/etc/darkbloom/tpm-ek-ca",
      readOnly: true,
    });
    const noAllowlist = buildDeployment(
      storedCoordinator({ tpm: { ekCaConfigMap: "tpm-vendors" } }),
      OPTIONS,
    );
    const args = noAllowlist.spec?.template.spec?.containers[0]?.args ?? [];
    expect(args).not.toContain("--tpm-pcr-allow");
    expect(noAllowlist.spec?.template.spec?.volumes).toContainEqual(
      expect.objectContaining({
        configMap: expect.objectContaining({ items: [{ key: "ca.pem", path: "ek-ca.pem" }] }),
      }),
    );
  });

  it("lets a replica drain before it is killed, and gives it no API access", () => {
    const pod = buildDeployment(storedCoordinator({ drainSeconds: 120 }), OPTIONS).spec?.template.spec;
    expect(pod?.terminationGracePeriodSeconds).toBe(5 + 120 + 10);
    expect(pod?.volumes).toEqual([{ name: "data", emptyDir: {} }]);
    expect(pod?.enableServiceLinks).toBe(false);
    expect(pod?.automountServiceAccountToken).toBe(false);
  });

  it("adds the user's pod labels and annotations under the operator's own", () => {
    const coordinator = storedCoordinator({
      podLabels: { team: "infra", "app.kubernetes.io/instance": "spoofed" },
      podAnnotations: { "prometheus.io/scrape": "true" },
    });
    const template = buildDeployment(coordinator, OPTIONS).spec?.template;
    expect(template?.metadata?.labels).toEqual({ team: "infra", ...labels(coordinator) });
    expect(template?.metadata?.annotations).toEqual({
      "prometheus.io/scrape": "true",
      "darkbloom.dev/config-hash": "0123456789abcdef",
    });
  });

  it("takes resources, scheduling and pull secrets from the spec", () => {
    const toleration = { key: "dedicated", operator: "Equal", value: "darkbloom", effect: "NoSchedule" };
    const spread = {
      maxSkew: 1,
      topologyKey: "topology.kubernetes.io/zone",
      whenUnsatisfiable: "ScheduleAnyway",
    };
    const affinity = { nodeAffinity: { preferredDuringSchedulingIgnoredDuringExecution: [] } };
    const coordinator = storedCoordinator({
      imagePullSecrets: [{ name: "registry" }],
      resources: { requests: { cpu: "500m", memory: "512Mi" }, limits: { cpu: 2, memory: "1Gi" } },
      scheduling: {
        nodeSelector: { pool: "serving" },
        tolerations: [toleration],
        affinity,
        topologySpreadConstraints: [spread],
        priorityClassName: "critical",
      },
    });
    const pod = buildDeployment(coordinator, OPTIONS).spec?.template.spec;
    expect(pod?.containers[0]?.resources).toEqual({
      requests: { cpu: "500m", memory: "512Mi" },
      limits: { cpu: "2", memory: "1Gi" },
    });
    expect(pod).toMatchObject({
      imagePullSecrets: [{ name: "registry" }],
      nodeSelector: { pool: "serving" },
      tolerations: [toleration],
      affinity,
      topologySpreadConstraints: [spread],
      priorityClassName: "critical",
    });
  });

  it("leaves absent optional settings out", () => {
    const pod = buildDeployment(storedCoordinator(), OPTIONS).spec?.template.spec;
    for (const key of [
      "imagePullSecrets",
      "nodeSelector",
      "tolerations",
      "affinity",
      "topologySpreadConstraints",
      "priorityClassName",
    ]) {
      expect(pod, key).not.toHaveProperty(key);
    }
    expect(pod?.containers[0]).not.toHaveProperty("imagePullPolicy");
  });
});
