// The chart installed onto the strict fake API server as Helm installs it, in its two steps on a
// cluster without the CRDs: helm renders against the server (`helm install --dry-run=server`: its
// capabilities, `lookup` and ownership checks), each object is created with strict field validation
// and the ownership metadata Helm adds (the fake speaks no protobuf, which helm's own writes use),
// and the second run (the upgrade) adds the Coordinator once its CRD is served. Then the operator
// runs in this process as the rendered Deployment runs it: its flags, its ServiceAccount, RBAC on.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type RunningOperator, type ServiceResolver, startOperator } from "@darkbloom/operator";
import type { FakeApiServer } from "@darkbloom/operator/testing";
import { KubeConfig } from "@kubernetes/client-node";
import { pino } from "pino";
import {
  AdminClient,
  CHART,
  CI_VALUES,
  find,
  helm,
  type Manifest,
  NAMESPACE,
  parseManifests,
  RELEASE,
} from "./helm.js";

export interface HelmRun {
  manifests: Manifest[];
  notes: string;
}

export interface ChartInstall {
  admin: AdminClient;
  /** The install: without the CRDs served, no Coordinator. */
  first: HelmRun;
  /** The upgrade: everything the release holds. */
  second: HelmRun;
  /** What the upgrade added. */
  added: Manifest[];
}

/** `helm install --dry-run=server` against the fake API server: the manifests and notes it renders. */
async function dryRun(server: FakeApiServer, valuesFile: string, flags: string[]): Promise<HelmRun> {
  const dir = await mkdtemp(join(tmpdir(), "darkbloom-helm-"));
  try {
    const kubeconfig = join(dir, "kubeconfig");
    await writeFile(kubeconfig, server.kubeconfig(server.adminToken));
    const result = await helm(
      [
        "install",
        RELEASE,
        CHART,
        "--namespace",
        NAMESPACE,
        "--values",
        join(CI_VALUES, valuesFile),
        ...flags,
        "--dry-run=server",
        // Client-side validation downloads the OpenAPI document, which the fake does not serve.
        "--disable-openapi-validation",
        "--output",
        "json",
      ],
      { KUBECONFIG: kubeconfig, HELM_CACHE_HOME: dir, HELM_CONFIG_HOME: dir, HELM_DATA_HOME: dir },
    );
    if (result.code !== 0) throw new Error(`helm install --dry-run=server: ${result.stderr}`);
    const release = JSON.parse(result.stdout) as { manifest: string; info: { notes: string } };
    return { manifests: parseManifests(release.manifest), notes: release.info.notes };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Creates what Helm would, with the ownership metadata it adds (so that its next run adopts them). */
async function createAll(admin: AdminClient, manifests: Manifest[]): Promise<void> {
  const refused: string[] = [];
  for (const m of manifests) {
    const annotations = {
      ...m.metadata.annotations,
      "meta.helm.sh/release-name": RELEASE,
      "meta.helm.sh/release-namespace": NAMESPACE,
    };
    const { status, body } = await admin.create({ ...m, metadata: { ...m.metadata, annotations } });
    if (status !== 201) refused.push(`${m.kind} ${m.metadata.name}: ${status} ${body.message}`);
  }
  if (refused.length > 0) throw new Error(`the API server refused:\n${refused.join("\n")}`);
}

/** Installs the chart with a ci/ values file (and --set flags) into the release's namespace. */
export async function installChart(
  server: FakeApiServer,
  valuesFile: string,
  flags: string[] = [],
): Promise<ChartInstall> {
  const admin = new AdminClient(server);
  await admin.create({ apiVersion: "v1", kind: "Namespace", metadata: { name: NAMESPACE } });
  const first = await dryRun(server, valuesFile, flags);
  const isCrd = (m: Manifest) => m.kind === "CustomResourceDefinition";
  await createAll(admin, first.manifests.filter(isCrd));
  await createAll(
    admin,
    first.manifests.filter((m) => !isCrd(m)),
  );
  const second = await dryRun(server, valuesFile, flags);
  const installed = new Set(first.manifests.map((m) => `${m.kind}/${m.metadata.name}`));
  const added = second.manifests.filter((m) => !installed.has(`${m.kind}/${m.metadata.name}`));
  await createAll(admin, added);
  return { admin, first, second, added };
}

/** The operator as the rendered Deployment runs it: its leader-election flags, as its ServiceAccount. */
export async function startRenderedOperator(
  server: FakeApiServer,
  manifests: Manifest[],
  resolveService?: ServiceResolver,
): Promise<{ operator: RunningOperator; user: string; leaseName: string }> {
  const pod = find(manifests, "Deployment", `${RELEASE}-operator`).spec.template.spec;
  const flags = new Map(
    (pod.containers[0].args as string[]).map((arg) => arg.split("=", 2) as [string, string | undefined]),
  );
  const ms = (flag: string) => {
    const [, value, unit] = /^(\d+)(ms|s|m)$/.exec(flags.get(flag) ?? "") ?? [];
    return Number(value) * (unit === "ms" ? 1 : unit === "s" ? 1000 : 60_000);
  };
  if (flags.get("--lease-namespace") !== "$(POD_NAMESPACE)")
    throw new Error("the Lease is not in the pod's namespace");
  const user = `system:serviceaccount:${NAMESPACE}:${pod.serviceAccountName}`;
  const token = server.addUser(user, [
    "system:serviceaccounts",
    `system:serviceaccounts:${NAMESPACE}`,
    "system:authenticated",
  ]);
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromString(server.kubeconfig(token, NAMESPACE));
  const leaseName = flags.get("--lease-name") ?? "";
  const operator = await startOperator({
    kubeConfig,
    log: pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" }),
    identity: "darkbloom-operator-0",
    leaderElection: {
      name: leaseName,
      namespace: NAMESPACE,
      leaseDurationMs: ms("--lease-duration"),
      renewDeadlineMs: ms("--renew-deadline"),
      retryPeriodMs: ms("--retry-period"),
    },
    ...(resolveService ? { resolveService } : {}),
  });
  return { operator, user, leaseName };
}
