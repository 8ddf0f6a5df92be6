// The Helm chart running real coordinators: installed on the strict fake API server in its two
// steps (tests/helm/install.ts) with the URL of a real PostgreSQL, the fake cluster running the
// pods as processes of the built CLI, and the operator reconciling as the chart's ServiceAccount
// under RBAC. The migration Job migrates the empty database, the replica becomes Ready behind the
// operator's Service, and the admin key the chart generated opens the admin API.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { adminClient, startTestPostgres, type TestPostgres } from "@darkbloom/coordinator/testing";
import type { RunningOperator } from "@darkbloom/operator";
import {
  type FakeApiServer,
  type FakeCluster,
  startFakeApiServer,
  startFakeCluster,
} from "@darkbloom/operator/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type AdminClient,
  find,
  type Json,
  type Manifest,
  NAMESPACE,
  RELEASE,
  waitFor,
} from "../helm/helm.js";
import { installChart, startRenderedOperator } from "../helm/install.js";

const REPO = fileURLToPath(new URL("../../", import.meta.url));
const COORDINATOR = [process.execPath, join(REPO, "services/coordinator/bin/darkbloom-coordinator.js")];

let postgres: TestPostgres;
let server: FakeApiServer;
let cluster: FakeCluster;
let operator: RunningOperator;
let manifests: Manifest[];
let admin: AdminClient;
let workDir: string;

beforeAll(async () => {
  postgres = await startTestPostgres();
  server = await startFakeApiServer();
  const installed = await installChart(server, "database-url-values.yaml", [
    "--set",
    `coordinator.database.url=${postgres.url}`,
  ]);
  manifests = installed.second.manifests;
  admin = installed.admin;
  workDir = await mkdtemp(join(tmpdir(), "darkbloom-helm-cluster-"));
  // The chart's coordinator image runs the built CLI; the operator's image is unknown here (its
  // pods wait), as the operator runs in this process.
  cluster = await startFakeCluster({
    apiServerUrl: server.url,
    token: server.adminToken,
    workDir,
    images: { [find(manifests, "Coordinator").spec.image]: { entrypoint: COORDINATOR } },
  });
  ({ operator } = await startRenderedOperator(server, manifests, async (ns, service, port) => {
    const at = await cluster.serviceAddress(ns, service, port);
    return `http://${at.host}:${at.port}`;
  }));
});

afterAll(async () => {
  await operator?.close();
  await cluster?.close();
  await server?.close();
  await postgres?.stop();
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

describe("the chart on a cluster", () => {
  it("migrates the database, serves behind the operator's Service, and takes the generated admin key", async () => {
    const ready = await waitFor(
      "the Coordinator to be Ready",
      async () => {
        const coordinator = await admin.get("darkbloom.dev/v1alpha1", "Coordinator", NAMESPACE, RELEASE);
        const condition = (coordinator?.status?.conditions as Json[] | undefined)?.find(
          (c) => c.type === "Ready",
        );
        return condition?.status === "True" ? coordinator : undefined;
      },
      90_000,
    );
    expect(ready.status.readyReplicas).toBe(1);
    expect(ready.status.migratedImage).toBe(ready.spec.image);
    const jobs = await admin.list("batch/v1", "Job", NAMESPACE);
    expect(jobs.map((j) => j.status.succeeded)).toEqual([1]);

    const at = await cluster.serviceAddress(NAMESPACE, RELEASE, "http");
    const url = `http://${at.host}:${at.port}`;
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    const secret = find(manifests, "Secret", `${RELEASE}-admin-key`);
    const adminKey = Buffer.from(secret.data["admin-key"], "base64").toString();
    const account = await adminClient(url, adminKey).createAccount({
      name: "helm-consumer",
      initialCreditMicroUsd: 1n,
    });
    expect(account.apiKeySecret).toMatch(/\S/);
  });
});
