// The Helm chart (charts/darkbloom), checked with the real helm v4: `helm lint --strict`, a matrix of
// values files (charts/darkbloom/ci) rendered and validated offline (typed fields, the strict fake
// API server's dry runs, names, selectors, references), what each part renders, values the schema or
// the templates refuse, and (install.test.ts) an install onto the strict fake API server that the
// operator then reconciles with the rendered ServiceAccount's rights.
import { readdirSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import {
  coordinatorCrd,
  LEADER_ELECTION_RULES,
  OPERATOR_RULES,
  providerReleaseCrd,
} from "@darkbloom/operator";
import { type FakeApiServer, startFakeApiServer } from "@darkbloom/operator/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { documentProblems, duplicates, selectorProblems, unresolved } from "./checks.js";
import {
  AdminClient,
  all,
  BAD_VALUES,
  CHART,
  CI_VALUES,
  find,
  helm,
  type Json,
  type Manifest,
  NAMESPACE,
  RELEASE,
  render,
  selects,
} from "./helm.js";

const MATRIX = readdirSync(CI_VALUES)
  .filter((f) => f.endsWith("-values.yaml"))
  .sort();
const BAD = readdirSync(BAD_VALUES)
  .filter((f) => f.endsWith(".yaml"))
  .sort();

/** What each matrix file leaves to the user to create, as values.yaml documents it. */
const USER_PROVIDED: Record<string, string[]> = {
  "coordinator-tls-values.yaml": ["Secret/darkbloom-coordinator-tls"],
  "coordinator-tpm-values.yaml": [],
  "crds-off-values.yaml": ["Secret/darkbloom-database"],
  "database-url-values.yaml": [],
  "defaults-values.yaml": ["Secret/darkbloom-database"],
  "external-database-values.yaml": [
    "Secret/platform-darkbloom-admin",
    "Secret/platform-postgres",
    "Secret/registry-credentials",
  ],
  "high-availability-values.yaml": ["Secret/darkbloom-api-tls", "Secret/darkbloom-database"],
  "operator-only-values.yaml": [],
};

const OPERATOR = `${RELEASE}-operator`;
const KEEP = { "helm.sh/resource-policy": "keep" };
const rendered = new Map<string, Manifest[]>();
let appVersion: string;

beforeAll(async () => {
  const renders = await Promise.all(MATRIX.map(async (file) => [file, await render(file)] as const));
  for (const [file, manifests] of renders) rendered.set(file, manifests);
  appVersion = (parse(await readFile(join(CHART, "Chart.yaml"), "utf8")) as { appVersion: string })
    .appVersion;
});

function matrix(file: string): Manifest[] {
  const manifests = rendered.get(`${file}-values.yaml`);
  if (!manifests) throw new Error(`${file} was not rendered`);
  return manifests;
}

describe("the chart", () => {
  it("is versioned with the operator, for Kubernetes 1.29 and later", async () => {
    const chart = parse(await readFile(join(CHART, "Chart.yaml"), "utf8")) as Json;
    const operator = JSON.parse(await readFile(join(CHART, "../../operator/package.json"), "utf8")) as Json;
    expect(chart).toMatchObject({ apiVersion: "v2", name: "darkbloom", kubeVersion: ">=1.29.0-0" });
    expect(chart.version).toBe(operator.version);
    expect(chart.appVersion).toBe(operator.version);
  });

  it("has the matrix of values files the checks name", () => {
    expect(MATRIX).toEqual(Object.keys(USER_PROVIDED));
  });

  it.each(["(none)", ...MATRIX])("passes helm lint --strict with values %s", async (file) => {
    const values = file === "(none)" ? [] : ["--values", join(CI_VALUES, file)];
    const result = await helm(["lint", "--strict", CHART, ...values]);
    expect(result.stdout + result.stderr, "helm lint").toContain("0 chart(s) failed");
    expect(result.code).toBe(0);
  });
});

describe.each(MATRIX)("rendered with %s", (file) => {
  it("has notes that render (helm install --dry-run=client)", async () => {
    const values = ["--values", join(CI_VALUES, file)];
    const result = await helm([
      "install",
      RELEASE,
      CHART,
      "--namespace",
      NAMESPACE,
      "--dry-run=client",
      ...values,
    ]);
    expect(result.code, result.stderr).toBe(0);
    const notes = result.stdout.slice(result.stdout.indexOf("NOTES:"));
    expect(notes).toContain(`kubectl -n ${NAMESPACE} logs deployment/${OPERATOR}`);
    if (file !== "operator-only-values.yaml") expect(notes).toContain("The admin API key:");
  });

  const manifests = () => rendered.get(file) ?? [];

  it("has only valid documents: typed fields, DNS names, labels", () => {
    expect(manifests().length).toBeGreaterThan(5);
    expect(manifests().flatMap(documentProblems)).toEqual([]);
  });

  it("has no two objects of one kind, namespace and name, and selectors that select", () => {
    expect(duplicates(manifests())).toEqual([]);
    expect(selectorProblems(manifests())).toEqual([]);
  });

  it("refers only to what it renders, and to the Secrets the user is told to create", () => {
    expect(unresolved(manifests())).toEqual(USER_PROVIDED[file]);
  });
});

describe("the rendered documents on the strict fake API server", () => {
  let server: FakeApiServer;
  let admin: AdminClient;

  beforeAll(async () => {
    server = await startFakeApiServer();
    admin = new AdminClient(server);
    for (const crd of [coordinatorCrd(), providerReleaseCrd()]) {
      expect((await admin.create(crd as unknown as Manifest)).status).toBe(201);
    }
    for (const name of [NAMESPACE, "tenants", "monitoring"]) {
      await admin.create({ apiVersion: "v1", kind: "Namespace", metadata: { name } });
    }
  });
  afterAll(() => server?.close());

  it.each(MATRIX)("are each accepted (dry run, strict field validation) from %s", async (file) => {
    const refused: string[] = [];
    for (const m of rendered.get(file) ?? []) {
      // The CRDs exist (their content is compared below); the Gateway API's and the Prometheus
      // Operator's kinds are not served here.
      if (["CustomResourceDefinition", "HTTPRoute", "ServiceMonitor"].includes(m.kind)) continue;
      const { status, body } = await admin.create(m, { dryRun: true });
      if (status !== 201) refused.push(`${m.kind} ${m.metadata.name}: ${status} ${body.message}`);
    }
    expect(refused).toEqual([]);
  });
});

describe("the CRDs", () => {
  it("are exactly the generated ones, with the chart's labels and kept by helm uninstall", () => {
    const crds = all(matrix("defaults"), "CustomResourceDefinition");
    expect(crds.map((c) => c.metadata.name)).toEqual([
      "coordinators.darkbloom.dev",
      "providerreleases.darkbloom.dev",
    ]);
    for (const [crd, generated] of [
      [crds[0], coordinatorCrd()],
      [crds[1], providerReleaseCrd()],
    ] as const) {
      const { labels, annotations, ...metadata } = crd?.metadata ?? { name: "" };
      expect({ ...crd, metadata }).toEqual(generated);
      expect(annotations).toEqual(KEEP);
      expect(labels).toMatchObject({
        "app.kubernetes.io/instance": RELEASE,
        "helm.sh/chart": `darkbloom-${appVersion}`,
      });
    }
  });

  it("are left out with crds.create false", () => {
    expect(all(matrix("crds-off"), "CustomResourceDefinition")).toEqual([]);
  });
});

describe("the operator", () => {
  it("gets exactly rbac.ts's rules: cluster-wide, and for its Lease in the release's namespace", () => {
    const manifests = matrix("defaults");
    expect(find(manifests, "ClusterRole").rules).toEqual(OPERATOR_RULES);
    const role = find(manifests, "Role");
    expect(role.rules).toEqual(LEADER_ELECTION_RULES);
    expect(role.metadata.namespace).toBe(NAMESPACE);
    const subject = { kind: "ServiceAccount", name: OPERATOR, namespace: NAMESPACE };
    expect(find(manifests, "ClusterRoleBinding")).toMatchObject({
      roleRef: { kind: "ClusterRole", name: OPERATOR },
      subjects: [subject],
    });
    expect(find(manifests, "RoleBinding")).toMatchObject({
      roleRef: { kind: "Role", name: role.metadata.name },
      subjects: [subject],
    });
    expect(find(manifests, "ServiceAccount", OPERATOR).automountServiceAccountToken).toBe(false);
  });

  it("watching one namespace, is bound to its ClusterRole there only", () => {
    const manifests = matrix("operator-only");
    expect(all(manifests, "ClusterRoleBinding")).toEqual([]);
    const bindings = all(manifests, "RoleBinding").filter((b) => b.roleRef.kind === "ClusterRole");
    expect(bindings.map((b) => [b.metadata.namespace, b.roleRef.name])).toEqual([["tenants", OPERATOR]]);
    expect(find(manifests, "Deployment").spec.template.spec.containers[0].args).toContain(
      "--namespace=tenants",
    );
  });

  it("runs with leader election, the downward API, probes, metrics and a locked-down container", () => {
    const manifests = matrix("defaults");
    const deployment = find(manifests, "Deployment", OPERATOR);
    const pod = deployment.spec.template.spec;
    const [container] = pod.containers;
    expect(deployment.spec.replicas).toBe(2);
    expect(pod).toMatchObject({ serviceAccountName: OPERATOR, automountServiceAccountToken: true });
    expect(container.image).toBe(`ghcr.io/darkbloom/operator:${appVersion}`);
    expect(container.args).toEqual([
      "run",
      `--lease-name=${OPERATOR}`,
      "--lease-namespace=$(POD_NAMESPACE)",
      "--lease-duration=15s",
      "--renew-deadline=10s",
      "--retry-period=2s",
      "--health-addr=0.0.0.0:8081",
      "--metrics-addr=0.0.0.0:8080",
      "--log-level=info",
    ]);
    expect(container.env).toEqual([
      { name: "POD_NAME", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } },
      { name: "POD_NAMESPACE", valueFrom: { fieldRef: { fieldPath: "metadata.namespace" } } },
    ]);
    expect(container.ports).toEqual([
      { name: "metrics", containerPort: 8080, protocol: "TCP" },
      { name: "health", containerPort: 8081, protocol: "TCP" },
    ]);
    expect(container.livenessProbe.httpGet).toEqual({ path: "/healthz", port: "health" });
    expect(container.readinessProbe.httpGet).toEqual({ path: "/readyz", port: "health" });
    expect(container.securityContext).toEqual({
      runAsNonRoot: true,
      runAsUser: 10001,
      runAsGroup: 10001,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ["ALL"] },
      seccompProfile: { type: "RuntimeDefault" },
    });
    expect(container.resources.requests).toEqual({ cpu: "50m", memory: "128Mi" });
    const metrics = find(manifests, "Service", `${OPERATOR}-metrics`);
    expect(metrics.spec.ports).toEqual([
      { name: "metrics", port: 8080, targetPort: "metrics", protocol: "TCP" },
    ]);
  });

  it("has a disruption budget only with more than one replica", () => {
    expect(find(matrix("high-availability"), "PodDisruptionBudget", OPERATOR).spec).toMatchObject({
      maxUnavailable: 1,
    });
    expect(all(matrix("operator-only"), "PodDisruptionBudget")).toEqual([]);
  });

  it("runs one replica without leader election when told to", async () => {
    const manifests = await render(
      undefined,
      "--set",
      "operator.replicas=1,operator.leaderElection.enabled=false",
    );
    const args: string[] = find(manifests, "Deployment").spec.template.spec.containers[0].args;
    expect(args).toContain("--no-leader-elect");
    expect(args.filter((a) => a.startsWith("--lease"))).toEqual([]);
  });
});

describe("the Coordinator", () => {
  it("is the chart's values as typed fields, on the appVersion's image", () => {
    const coordinator = find(matrix("external-database"), "Coordinator");
    expect(coordinator.metadata).toMatchObject({ name: RELEASE, namespace: NAMESPACE });
    expect(coordinator.spec).toEqual({
      replicas: 2,
      image: `ghcr.io/darkbloom/coordinator:${appVersion}`,
      imagePullSecrets: [{ name: "registry-credentials" }],
      database: { secretRef: { name: "platform-postgres", key: "connection-url" } },
      adminKeySecretRef: { name: "platform-darkbloom-admin", key: "token" },
      config: {
        minTrust: "hardware",
        minProviderVersion: "1.4.0",
        queueTimeout: "45s",
        rateLimit: 0,
        instanceHeartbeat: "2s",
        instanceStale: "20s",
        maxResponseBuffer: "2MiB",
        logLevel: "warn",
        trustProxy: 1,
      },
      resources: { requests: { cpu: "250m", memory: "512Mi" } },
      service: { type: "ClusterIP", port: 80 },
      disruptionBudget: { enabled: true, maxUnavailable: 1 },
      drainSeconds: 30,
      metrics: { port: 9090 },
    });
    expect(all(matrix("external-database"), "Secret")).toEqual([]);
  });

  it("keeps a database URL in a Secret of the chart's", () => {
    const manifests = matrix("database-url");
    const secret = find(manifests, "Secret", `${RELEASE}-database`);
    expect(Buffer.from(secret.data.url, "base64").toString()).toBe(
      "postgres://darkbloom:secret@postgres.databases.svc:5432/darkbloom?sslmode=require",
    );
    expect(find(manifests, "Coordinator").spec.database).toEqual({
      secretRef: { name: secret.metadata.name, key: "url" },
    });
  });

  it("generates an admin key into a Secret that helm keeps", () => {
    const manifests = matrix("defaults");
    const secret = find(manifests, "Secret", `${RELEASE}-admin-key`);
    expect(secret.metadata.annotations).toEqual(KEEP);
    expect(Buffer.from(secret.data["admin-key"], "base64").toString()).toMatch(/^dbadm_[A-Za-z0-9]{43}$/);
    expect(find(manifests, "Coordinator").spec.adminKeySecretRef).toEqual({
      name: secret.metadata.name,
      key: "admin-key",
    });
  });

  it("leaves its replicas to /scale when they are null", async () => {
    const manifests = await render(undefined, "--set", "coordinator.replicas=null");
    expect(find(manifests, "Coordinator").spec.replicas).toBeUndefined();
  });

  it("waits for its CRD to be served, and is left out with coordinator.enabled false", async () => {
    const result = await helm(["template", RELEASE, CHART, "--namespace", NAMESPACE]);
    expect(result.code).toBe(0);
    const kinds = result.stdout.match(/^kind: \w+$/gm) ?? [];
    expect(kinds).not.toContain("kind: Coordinator");
    expect(kinds).toContain("kind: Deployment");
    const operatorOnly = matrix("operator-only").map((m) => m.kind);
    for (const kind of ["Coordinator", "Secret", "NetworkPolicy", "Ingress", "HTTPRoute"]) {
      expect(operatorOnly).not.toContain(kind);
    }
  });

  it("keeps every name within 63 characters under the longest release name", async () => {
    const release = "r".repeat(53); // Helm's limit
    const result = await helm([
      "template",
      release,
      CHART,
      "--namespace",
      NAMESPACE,
      "--api-versions",
      "darkbloom.dev/v1alpha1/Coordinator",
    ]);
    expect(result.code, result.stderr).toBe(0);
    const names = (result.stdout.match(/^ {2}name: (\S+)$/gm) ?? []).map((line) => line.trim().slice(6));
    expect(names.length).toBeGreaterThan(5);
    for (const name of names) if (!name.includes(".")) expect(name.length, name).toBeLessThanOrEqual(63);
  });
});

describe("the exposure", () => {
  it("has a NetworkPolicy opening the public port to all, and metrics to none, by default", () => {
    const policy = find(matrix("defaults"), "NetworkPolicy");
    expect(policy.spec).toEqual({
      podSelector: {
        matchLabels: {
          "app.kubernetes.io/name": "darkbloom-coordinator",
          "app.kubernetes.io/instance": RELEASE,
          "app.kubernetes.io/component": "coordinator",
        },
      },
      policyTypes: ["Ingress"],
      ingress: [{ ports: [{ port: "http", protocol: "TCP" }] }],
    });
  });

  it("restricts the public port to ingressFrom, the operator and the peers, and metrics to metricsFrom", () => {
    const policy = find(matrix("high-availability"), "NetworkPolicy");
    const [http, metrics] = policy.spec.ingress as Json[];
    const from = (http?.from ?? []) as Json[];
    expect(
      from.slice(0, 2).map((p) => p.namespaceSelector.matchLabels["kubernetes.io/metadata.name"]),
    ).toEqual(["ingress-nginx", "gateway-system"]);
    const operatorPods = find(matrix("high-availability"), "Deployment", OPERATOR).spec.template.metadata
      .labels;
    expect(selects(from[2]?.podSelector.matchLabels, operatorPods)).toBe(true);
    expect(from[3]?.podSelector.matchLabels).toEqual(policy.spec.podSelector.matchLabels);
    expect(metrics).toEqual({
      ports: [{ port: "metrics", protocol: "TCP" }],
      from: [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "monitoring" } } }],
    });
  });

  it("lets only coordinator pods reach a separate peer port", async () => {
    const manifests = await render("high-availability-values.yaml", "--set", "coordinator.peerPort=9443");
    const policy = find(manifests, "NetworkPolicy");
    const [http, peer] = policy.spec.ingress as Json[];
    expect(http?.from).toHaveLength(3);
    expect(peer).toEqual({
      ports: [{ port: 9443, protocol: "TCP" }],
      from: [{ podSelector: policy.spec.podSelector }],
    });
  });

  it("has an Ingress for ingress-nginx's h2c backends and long streams", async () => {
    const manifests = matrix("high-availability");
    const ingress = find(manifests, "Ingress");
    expect(ingress.metadata.annotations).toEqual({
      "nginx.ingress.kubernetes.io/backend-protocol": "GRPC",
      "nginx.ingress.kubernetes.io/proxy-read-timeout": "3600",
      "nginx.ingress.kubernetes.io/proxy-send-timeout": "3600",
      "nginx.ingress.kubernetes.io/proxy-body-size": "8m",
    });
    expect(ingress.spec).toEqual({
      ingressClassName: "nginx",
      tls: [{ secretName: "darkbloom-api-tls", hosts: ["api.darkbloom.example"] }],
      rules: [
        {
          host: "api.darkbloom.example",
          http: {
            paths: [
              {
                path: "/",
                pathType: "Prefix",
                backend: { service: { name: RELEASE, port: { name: "http" } } },
              },
            ],
          },
        },
      ],
    });
    const dropped = await render(
      "high-availability-values.yaml",
      "--set",
      "ingress.annotations.nginx\\.ingress\\.kubernetes\\.io/proxy-body-size=null",
    );
    expect(Object.keys(find(dropped, "Ingress").metadata.annotations ?? {})).not.toContain(
      "nginx.ingress.kubernetes.io/proxy-body-size",
    );
  });

  it("serves the coordinator's own TLS: spec.tls with a peer port, and GRPCS from ingress-nginx", () => {
    const manifests = matrix("coordinator-tls");
    const coordinator = find(manifests, "Coordinator");
    expect(coordinator.spec.peerPort).toBe(9443);
    expect(coordinator.spec.tls).toEqual({
      secretName: "darkbloom-coordinator-tls",
      serverName: "api.darkbloom.example",
    });
    expect(find(manifests, "Ingress").metadata.annotations).toMatchObject({
      "nginx.ingress.kubernetes.io/backend-protocol": "GRPCS",
    });
    // Without TLS the Coordinator has no tls field, and a protocol the user chose is kept with it.
    expect(find(matrix("high-availability"), "Coordinator").spec).not.toHaveProperty("tls");
  });

  it("hands the TPM vendors' EK CAs to the Coordinator in a ConfigMap of its own, with the allowed boot states", () => {
    const manifests = matrix("coordinator-tpm");
    const coordinator = find(manifests, "Coordinator");
    expect(coordinator.spec.tpm).toEqual({
      ekCaConfigMap: "darkbloom-tpm-ek-ca",
      ekCaKey: "ca.pem",
      pcrAllow: [
        "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969",
        "0f9d3cbd4c5ff4c2cba4b2b5e58f0f9e0c1d0bd9a8a1b1f84e4ac0ee0f1f2a3b",
      ],
    });
    const configMap = find(manifests, "ConfigMap", "darkbloom-tpm-ek-ca");
    expect((configMap.data as Record<string, string>)["ca.pem"]).toMatch(
      /^-----BEGIN CERTIFICATE-----\n[\s\S]+\n-----END CERTIFICATE-----\n$/,
    );
    // Without an EK CA the Coordinator has no tpm field and no ConfigMap is made.
    expect(find(matrix("defaults"), "Coordinator").spec).not.toHaveProperty("tpm");
    expect(all(matrix("defaults"), "ConfigMap").map((m) => m.metadata.name)).not.toContain(
      "darkbloom-tpm-ek-ca",
    );
  });

  it("keeps a backend protocol the user set when the coordinator serves TLS", async () => {
    const manifests = await render(
      "coordinator-tls-values.yaml",
      "--set",
      "ingress.annotations.nginx\\.ingress\\.kubernetes\\.io/backend-protocol=HTTPS",
    );
    expect(
      find(manifests, "Ingress").metadata.annotations?.["nginx.ingress.kubernetes.io/backend-protocol"],
    ).toBe("HTTPS");
  });

  it("has an HTTPRoute (gateway.networking.k8s.io/v1) without timeouts, to the coordinator's Service", () => {
    const route = find(matrix("high-availability"), "HTTPRoute");
    expect(route.apiVersion).toBe("gateway.networking.k8s.io/v1");
    expect(route.spec).toEqual({
      parentRefs: [{ name: "public", namespace: "gateway-system", sectionName: "https" }],
      hostnames: ["gw.darkbloom.example"],
      rules: [
        {
          matches: [{ path: { type: "PathPrefix", value: "/" } }],
          backendRefs: [{ name: RELEASE, port: 80 }],
          timeouts: { request: "0s", backendRequest: "0s" },
        },
      ],
    });
    // The Gateway API's Duration (GEP-2257), as the HTTPRoute CRD validates timeouts.
    for (const duration of Object.values(route.spec.rules[0].timeouts)) {
      expect(duration).toMatch(/^([0-9]{1,5}(h|m|s|ms)){1,4}$/);
    }
  });

  it("has ServiceMonitors for the operator's and the coordinator's metrics", () => {
    const manifests = matrix("high-availability");
    const monitors = all(manifests, "ServiceMonitor");
    expect(monitors.map((m) => m.metadata.name)).toEqual([OPERATOR, RELEASE]);
    for (const monitor of monitors) {
      expect(monitor.apiVersion).toBe("monitoring.coreos.com/v1");
      expect(monitor.metadata.labels?.release).toBe("prometheus");
      expect(monitor.spec.endpoints).toEqual([
        { port: "metrics", path: "/metrics", interval: "30s", scrapeTimeout: "10s" },
      ]);
    }
    const operatorMetrics = find(manifests, "Service", `${OPERATOR}-metrics`);
    expect(selects(monitors[0]?.spec.selector.matchLabels, operatorMetrics.metadata.labels ?? {})).toBe(true);
  });

  it("ships the Grafana dashboard as a ConfigMap for Grafana's sidecar, only when asked", async () => {
    expect(all(matrix("defaults"), "ConfigMap")).toEqual([]);
    const config = find(matrix("high-availability"), "ConfigMap", `${RELEASE}-dashboards`);
    expect(config.metadata.namespace).toBe("monitoring");
    expect(config.metadata.labels?.grafana_dashboard).toBe("1");
    expect(config.metadata.annotations).toEqual({ grafana_folder: "Darkbloom" });
    const file = await readFile(join(CHART, "dashboards/darkbloom-fleet.json"), "utf8");
    // The file as it is (tests/helm/dashboard.test.ts checks its queries), not a re-serialised copy.
    expect(config.data).toEqual({ "darkbloom-fleet.json": file });
  });
});

describe("values the chart refuses", () => {
  it.each(BAD)("refuses %s, naming the value", async (file) => {
    const path = join(BAD_VALUES, file);
    const expected = /^# refused: (.+)$/m.exec(await readFile(path, "utf8"))?.[1];
    expect(expected, `${file} says what it is refused with`).toBeDefined();
    const result = await helm(["template", RELEASE, CHART, "--namespace", NAMESPACE, "--values", path]);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain(expected);
  });
});
