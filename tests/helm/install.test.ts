// The chart installed on the strict fake API server in its two steps (install.ts), and the operator
// reconciling its Coordinator with the rendered ServiceAccount's rights only.
import { type FakeApiServer, startFakeApiServer } from "@darkbloom/operator/testing";
import { afterEach, describe, expect, it } from "vitest";
import {
  type AdminClient,
  find,
  type Json,
  type Manifest,
  NAMESPACE,
  RELEASE,
  render,
  selects,
  waitFor,
} from "./helm.js";
import { type ChartInstall, installChart, startRenderedOperator } from "./install.js";

interface Installed extends ChartInstall {
  server: FakeApiServer;
  operatorUser: string;
  leaseName: string;
}

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function install(valuesFile: string): Promise<Installed> {
  const server = await startFakeApiServer();
  cleanups.push(() => server.close());
  const installed = await installChart(server, valuesFile);
  // The install has no Coordinator (its CRD was not served) and says so; the upgrade adds it alone,
  // keeping the admin key the install generated.
  expect(installed.first.manifests.map((m) => m.kind)).not.toContain("Coordinator");
  expect(installed.first.notes).toContain(`NOT YET CREATED: the Coordinator "${RELEASE}"`);
  expect(installed.added.map((m) => m.kind)).toEqual(["Coordinator"]);
  expect(installed.second.notes).toContain(`kubectl -n ${NAMESPACE} get coordinators`);
  const adminKey = (manifests: Manifest[]) => find(manifests, "Secret", `${RELEASE}-admin-key`).data;
  expect(adminKey(installed.second.manifests)).toEqual(adminKey(installed.first.manifests));
  const { operator, user, leaseName } = await startRenderedOperator(server, installed.second.manifests);
  cleanups.push(() => operator.close());
  return { ...installed, server, operatorUser: user, leaseName };
}

async function coordinatorCondition(admin: AdminClient, type: string): Promise<Json | undefined> {
  const coordinator = await admin.get("darkbloom.dev/v1alpha1", "Coordinator", NAMESPACE, RELEASE);
  return (coordinator?.status?.conditions as Json[] | undefined)?.find((c) => c.type === type);
}

/** Nothing the operator asked for was forbidden: the rendered RBAC is enough. */
function forbidden(installed: Installed): string[] {
  return installed.server.audit
    .filter((entry) => entry.user === installed.operatorUser && entry.code === 403)
    .map((entry) => `${entry.verb} ${entry.resource} ${entry.namespace}/${entry.name}`);
}

describe("the chart installed on the strict fake API server", () => {
  it("with defaults: the operator leads and reports the database Secret the user must create", async () => {
    const installed = await install("defaults-values.yaml");
    const { admin } = installed;
    const degraded = await waitFor("the Coordinator to be Degraded", async () => {
      const condition = await coordinatorCondition(admin, "Degraded");
      return condition?.status === "True" ? condition : undefined;
    });
    expect(degraded.reason).toBe("SecretMissing");
    expect(degraded.message).toContain(`${RELEASE}-database`);
    const lease = await admin.get("coordination.k8s.io/v1", "Lease", NAMESPACE, installed.leaseName);
    expect(lease?.spec.holderIdentity).toBe("darkbloom-operator-0");
    expect(await admin.list("batch/v1", "Job", NAMESPACE)).toEqual([]);
    expect(forbidden(installed)).toEqual([]);
  });

  it("with a database URL: the operator migrates, and the chart's routes and policies fit its objects", async () => {
    const installed = await install("database-url-values.yaml");
    const { admin } = installed;
    const migrated = await waitFor("the migration to start", async () => {
      const condition = await coordinatorCondition(admin, "Migrated");
      return condition?.reason === "MigrationRunning" ? condition : undefined;
    });
    expect(migrated.status).toBe("False");
    const [job] = await admin.list("batch/v1", "Job", NAMESPACE);
    expect(job?.metadata.name).toMatch(new RegExp(`^${RELEASE}-migrate-[0-9a-f]{10}$`));
    expect(job?.spec.template.spec.containers[0].image).toBe(
      find(installed.second.manifests, "Coordinator").spec.image,
    );
    const service = await waitFor("the coordinator's Service", () =>
      admin.get("v1", "Service", NAMESPACE, RELEASE),
    );
    expect(await admin.get("v1", "Secret", NAMESPACE, `${RELEASE}-peer`)).toBeDefined();
    expect(await admin.get("policy/v1", "PodDisruptionBudget", NAMESPACE, RELEASE)).toBeDefined();

    // What the chart renders for the coordinator's pods and Service fits what the operator made.
    const withEverything = await render("high-availability-values.yaml");
    const policy = find(installed.second.manifests, "NetworkPolicy");
    expect(selects(policy.spec.podSelector.matchLabels, service.spec.selector)).toBe(true);
    expect(selects(policy.spec.podSelector.matchLabels, job?.spec.template.metadata.labels)).toBe(false);
    const monitor = find(withEverything, "ServiceMonitor", RELEASE);
    expect(selects(monitor.spec.selector.matchLabels, service.metadata.labels)).toBe(true);
    const http = (service.spec.ports as Json[]).find((p) => p.name === "http");
    expect(http).toMatchObject({ appProtocol: "kubernetes.io/h2c", port: 80 });
    expect((service.spec.ports as Json[]).map((p) => p.name)).toContain("metrics");
    const ingress = find(withEverything, "Ingress").spec.rules[0].http.paths[0].backend.service;
    expect(ingress).toEqual({ name: service.metadata.name, port: { name: "http" } });
    expect(find(withEverything, "HTTPRoute").spec.rules[0].backendRefs).toEqual([
      { name: service.metadata.name, port: http?.port },
    ]);
    expect(forbidden(installed)).toEqual([]);
  });
});
