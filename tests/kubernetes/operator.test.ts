// The operator running a Darkbloom cluster: the strict fake API server (with RBAC enforced on the
// operator's service account), fake controllers and a kubelet that run every pod as a real process,
// real coordinators on a real PostgreSQL, and scripted providers over the real protocol.
//
// One Coordinator goes through its life: created (migration Job, then two replicas serving a consumer
// with providers on different replicas), scaled through /scale, upgraded under steady load (the
// migration runs first, pods roll one at a time, no request fails), given an image whose migration
// fails (Degraded, the old pods keep serving), governed by ProviderReleases (a daemon whose binary
// no active release lists is de-routed), led by operator processes that hand over when the leader
// dies, and deleted (everything it owned goes).
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { adminClient } from "@darkbloom/coordinator/testing";
import { LEADER_ELECTION_RULES, OPERATOR_RULES } from "@darkbloom/operator";
import { OPERATOR_USER } from "@darkbloom/operator/testing";
import { newSigningKey, ScriptedProvider, softwareAttestor } from "@darkbloom/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_KEY, IMAGES, type KubeCluster, postFresh, startKubeCluster } from "./support.js";

const NAME = "main";
const MODEL = "kube-model";
const BINARY = "b1".repeat(32);
const OTHER_BINARY = "c2".repeat(32);

// biome-ignore lint/suspicious/noExplicitAny: the API server's objects, as JSON, read by the assertions
type Json = Record<string, any>;

let kube: KubeCluster;
let apiKey: string;
const providers: ScriptedProvider[] = [];

const group = { group: "darkbloom.dev", version: "v1alpha1", namespaced: true };
const COORDINATORS = { ...group, plural: "coordinators", kind: "Coordinator" };
const RELEASES = { ...group, plural: "providerreleases", kind: "ProviderRelease" };
const PODS = { group: "", version: "v1", plural: "pods", kind: "Pod", namespaced: true };
const JOBS = { group: "batch", version: "v1", plural: "jobs", kind: "Job", namespaced: true };
const REPLICA_SETS = {
  group: "apps",
  version: "v1",
  plural: "replicasets",
  kind: "ReplicaSet",
  namespaced: true,
};
const SECRETS = { group: "", version: "v1", plural: "secrets", kind: "Secret", namespaced: true };
const LEASES = {
  group: "coordination.k8s.io",
  version: "v1",
  plural: "leases",
  kind: "Lease",
  namespaced: true,
};
const OWNED_KINDS = [
  { group: "apps", version: "v1", plural: "deployments", kind: "Deployment", namespaced: true },
  { group: "", version: "v1", plural: "services", kind: "Service", namespaced: true },
  {
    group: "policy",
    version: "v1",
    plural: "poddisruptionbudgets",
    kind: "PodDisruptionBudget",
    namespaced: true,
  },
  JOBS,
];

const admin = () => kube.env.admin;
const ns = () => kube.env.namespace;
const coordinator = () => admin().get<Json>(COORDINATORS, ns(), NAME);
const conditionOf = async (type: string) =>
  ((await coordinator()).status?.conditions ?? []).find((c: Json) => c.type === type) as Json | undefined;

async function pods(): Promise<Json[]> {
  const list = await admin().list<Json>(
    PODS,
    ns(),
    `app.kubernetes.io/instance=${NAME},app.kubernetes.io/component=coordinator`,
  );
  return list.items;
}
const isReady = (pod: Json) =>
  (pod.status?.conditions ?? []).some((c: Json) => c.type === "Ready" && c.status === "True");

const chat = (content = "hello from kubernetes") => ({
  model: MODEL,
  messages: [{ role: "user", content }],
  max_tokens: 8,
});

async function provider(baseUrl: string): Promise<ScriptedProvider> {
  const key = newSigningKey();
  const p = new ScriptedProvider({
    baseUrl,
    models: [{ id: MODEL }],
    maxBatch: 4,
    // As a daemon does: a draining replica's providers reconnect through the Service to another.
    reconnect: true,
    attestor: softwareAttestor(key, { binarySha256: BINARY }),
    responseSigningKey: key.privateKey,
  });
  providers.push(p);
  await p.start();
  return p;
}

async function served(): Promise<number> {
  const url = `${await kube.serviceUrl(NAME)}/v1/chat/completions`;
  // Longer than the coordinators' queue timeout (10 s): a request no provider can take gets its 503.
  return (await postFresh(url, apiKey, chat(), 15_000).catch(() => ({ status: 0 }))).status;
}

beforeAll(async () => {
  kube = await startKubeCluster();
  const secret = (name: string, data: Record<string, string>) =>
    admin().create(SECRETS, {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name, namespace: ns() },
      data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString("base64")])),
    });
  await secret("database", { url: kube.databaseUrl });
  await secret("admin-key", { "admin-key": ADMIN_KEY });
  await kube.startOperator();
}, 120_000);

afterAll(async () => {
  await Promise.all(providers.splice(0).map((p) => p.stop().catch(() => undefined)));
  await kube?.stop();
}, 60_000);

describe("a Coordinator under the operator", () => {
  it("migrates, then brings up two real coordinators that serve a consumer with providers on different replicas", async () => {
    await admin().create(COORDINATORS, {
      apiVersion: "darkbloom.dev/v1alpha1",
      kind: "Coordinator",
      metadata: { name: NAME, namespace: ns() },
      spec: {
        replicas: 2,
        image: IMAGES.v1,
        database: { secretRef: { name: "database" } },
        adminKeySecretRef: { name: "admin-key" },
        drainSeconds: 5,
        // Forwarding between the replicas on a port of its own, as a NetworkPolicy would want it.
        peerPort: 8443,
        config: {
          heartbeatInterval: "1s",
          instanceHeartbeat: "500ms",
          instanceStale: "3s",
          queueTimeout: "10s",
        },
      },
    });
    await expect
      .poll(() => conditionOf("Ready"), { timeout: 90_000, interval: 500 })
      .toMatchObject({ status: "True" });
    const running = await pods();
    expect(running).toHaveLength(2);
    const ips = running.map((p) => p.status.podIP as string);
    expect(new Set(ips).size).toBe(2);
    // Each replica serves its peers on the peer port, at its pod IP.
    for (const pod of running) {
      expect(kube.cluster.podLog(ns(), pod.metadata.name)).toContain(
        `peers on http://${pod.status.podIP}:8443`,
      );
    }
    // The migration ran once, as a Job, before any replica started.
    const jobs = (await admin().list<Json>(JOBS, ns())).items;
    expect(jobs).toHaveLength(1);
    expect(jobs[0]?.status?.succeeded).toBe(1);

    const accounts = adminClient(await kube.serviceUrl(NAME), ADMIN_KEY);
    const created = await accounts.createAccount({
      name: "kube-consumer",
      initialCreditMicroUsd: 100_000_000n,
    });
    apiKey = created.apiKeySecret;
    // One provider on each replica, dialled at the pods themselves.
    const [onA, onB] = [await provider(`http://${ips[0]}:8080`), await provider(`http://${ips[1]}:8080`)];
    await expect.poll(served, { timeout: 30_000, interval: 500 }).toBe(200);
    const statuses = [];
    for (let i = 0; i < 8; i++) statuses.push(await served());
    expect(statuses).toEqual(Array(8).fill(200));
    expect(onA.received.length + onB.received.length).toBeGreaterThanOrEqual(9);
    await Promise.all([onA.stop(), onB.stop()]);
  }, 180_000);

  it("scales through the /scale subresource", async () => {
    const scalePath = `/apis/darkbloom.dev/v1alpha1/namespaces/${ns()}/coordinators/${NAME}/scale`;
    const call = async (method: string, body?: unknown) => {
      const res = await fetch(kube.env.apiServer.url + scalePath, {
        method,
        headers: {
          authorization: `Bearer ${kube.env.apiServer.adminToken}`,
          "content-type": "application/json",
        },
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
      expect(res.status).toBe(200);
      return (await res.json()) as Json;
    };
    const scale = await call("GET");
    expect(scale).toMatchObject({ kind: "Scale", spec: { replicas: 2 }, status: { replicas: 2 } });
    expect(scale.status.selector).toContain(`app.kubernetes.io/instance=${NAME}`);
    await call("PUT", { ...scale, spec: { replicas: 3 } });
    await expect
      .poll(async () => (await pods()).filter(isReady).length, { timeout: 60_000, interval: 500 })
      .toBe(3);
    await expect.poll(async () => (await coordinator()).status?.readyReplicas, { timeout: 30_000 }).toBe(3);
    const again = await call("GET");
    await call("PUT", { ...again, spec: { replicas: 2 } });
    await expect.poll(async () => (await pods()).length, { timeout: 60_000, interval: 500 }).toBe(2);
  }, 150_000);

  it("upgrades under steady load: the migration Job first, then one pod at a time, and no request fails", async () => {
    const service = await kube.serviceUrl(NAME);
    await Promise.all([provider(service), provider(service)]);
    await expect.poll(served, { timeout: 30_000, interval: 500 }).toBe(200);

    const failures: string[] = [];
    let completed = 0;
    let loading = true;
    // Each worker sends at most one request every 50 ms: 40 a second together, under the account's
    // inference rate limit (50 a second, burst 100), which this test is not about. Unpaced, two
    // workers against scripted providers on a fast machine went past it and counted its 429s.
    const PACE_MS = 50;
    const worker = async () => {
      while (loading) {
        const started = Date.now();
        const result = await postFresh(`${service}/v1/chat/completions`, apiKey, chat()).catch(
          (e: Error) => ({
            status: 0,
            text: e.message,
          }),
        );
        if (result.status === 200) completed += 1;
        else failures.push(`${result.status} ${result.text.slice(0, 200)}`);
        const wait = PACE_MS - (Date.now() - started);
        if (wait > 0 && loading) await new Promise((r) => setTimeout(r, wait));
      }
    };
    let mostPods = 0;
    let fewestReady = Number.POSITIVE_INFINITY;
    const watching = setInterval(() => {
      void pods().then((all) => {
        // Terminating pods (draining) are not counted against the surge, as in Kubernetes.
        const live = all.filter((p) => p.metadata.deletionTimestamp === undefined);
        mostPods = Math.max(mostPods, live.length);
        fewestReady = Math.min(fewestReady, live.filter(isReady).length);
      });
    }, 100);
    const workers = [worker(), worker()];
    try {
      await admin().mergePatch(COORDINATORS, ns(), NAME, { spec: { image: IMAGES.v2 } });
      await expect
        .poll(async () => (await coordinator()).status, { timeout: 180_000, interval: 500 })
        .toMatchObject({ currentImage: IMAGES.v2, readyReplicas: 2, updatedReplicas: 2 });
      await expect.poll(() => conditionOf("Ready"), { timeout: 30_000 }).toMatchObject({ status: "True" });
      // The old pods drain (their providers reconnect to the new ones) and go, under the same load.
      await expect
        .poll(async () => (await pods()).map((p) => p.spec.containers[0].image), {
          timeout: 120_000,
          interval: 500,
        })
        .toEqual([IMAGES.v2, IMAGES.v2]);
      await expect.poll(served, { timeout: 30_000, interval: 500 }).toBe(200);
    } finally {
      loading = false;
      clearInterval(watching);
      await Promise.all(workers);
    }
    expect(failures).toEqual([]);
    expect(completed).toBeGreaterThan(20);
    // Surge 1, unavailable 0: never more than three live pods, never fewer than two ready.
    expect(mostPods).toBeLessThanOrEqual(3);
    expect(fewestReady).toBeGreaterThanOrEqual(2);
    // The new image's migration finished before its ReplicaSet existed.
    const job = (await admin().list<Json>(JOBS, ns())).items.find(
      (j) => j.metadata.annotations?.["darkbloom.dev/image"] === IMAGES.v2,
    );
    const replicaSet = (await admin().list<Json>(REPLICA_SETS, ns())).items.find(
      (rs) => rs.spec.template.spec.containers[0].image === IMAGES.v2,
    );
    expect(job?.status?.completionTime).toBeDefined();
    expect(Date.parse(job?.status.completionTime)).toBeLessThanOrEqual(
      Date.parse(replicaSet?.metadata.creationTimestamp),
    );
  }, 300_000);

  it("an image whose migration fails leaves the old pods serving and the Coordinator Degraded", async () => {
    const before = (await pods()).map((p) => p.metadata.name).sort();
    await admin().mergePatch(COORDINATORS, ns(), NAME, { spec: { image: IMAGES.broken } });
    await expect
      .poll(() => conditionOf("Degraded"), { timeout: 120_000, interval: 500 })
      .toMatchObject({ status: "True", reason: "MigrationFailed" });
    expect((await conditionOf("Ready"))?.status).toBe("False");
    expect((await coordinator()).status).toMatchObject({ currentImage: IMAGES.v2, migratedImage: IMAGES.v2 });
    expect((await pods()).map((p) => p.metadata.name).sort()).toEqual(before);
    expect(await served()).toBe(200);
    // Back to the image that works: nothing to migrate, nothing to roll, healthy again.
    await admin().mergePatch(COORDINATORS, ns(), NAME, { spec: { image: IMAGES.v2 } });
    await expect.poll(() => conditionOf("Degraded"), { timeout: 30_000 }).toMatchObject({ status: "False" });
    await expect.poll(() => conditionOf("Ready"), { timeout: 30_000 }).toMatchObject({ status: "True" });
    expect((await pods()).map((p) => p.metadata.name).sort()).toEqual(before);
  }, 180_000);

  it("ProviderReleases de-route daemons whose binary no active release lists, and give them back", async () => {
    const release = (name: string, binarySha256: string) =>
      admin().create(RELEASES, {
        apiVersion: "darkbloom.dev/v1alpha1",
        kind: "ProviderRelease",
        metadata: { name, namespace: ns() },
        spec: {
          coordinatorRef: { name: NAME },
          version: name === "theirs" ? "2.0.0" : "1.0.0",
          platform: "linux-x64",
          binarySha256,
          bundleSha256: "ee".repeat(32),
          url: `https://releases.test/darkbloom-${name}.tar.gz`,
        },
      });
    const synced = (name: string) =>
      expect
        .poll(
          async () =>
            ((await admin().get<Json>(RELEASES, ns(), name)).status?.conditions ?? []).find(
              (c: Json) => c.type === "Synced",
            ),
          {
            timeout: 30_000,
            interval: 500,
          },
        )
        .toMatchObject({ status: "True" });
    // Within the coordinators' release-policy reload interval (10 s), on every replica. A request
    // for a model whose providers are all de-routed waits its queue timeout, then gets 503.
    const routed = (status: number) => expect.poll(served, { timeout: 45_000, interval: 500 }).toBe(status);
    const DEROUTED = 503;

    await release("theirs", OTHER_BINARY);
    await synced("theirs");
    await routed(DEROUTED);
    await release("ours", BINARY);
    await synced("ours");
    await routed(200);
    // Deleting a release deactivates it first (the finalizer), then the resource goes.
    await admin().delete(RELEASES, ns(), "ours");
    await expect
      .poll(
        () =>
          admin()
            .get(RELEASES, ns(), "ours")
            .catch(() => undefined),
        { timeout: 30_000 },
      )
      .toBeUndefined();
    await routed(DEROUTED);
    await admin().delete(RELEASES, ns(), "theirs");
    await expect
      .poll(
        () =>
          admin()
            .get(RELEASES, ns(), "theirs")
            .catch(() => undefined),
        { timeout: 30_000 },
      )
      .toBeUndefined();
    await routed(200);
  }, 180_000);

  it("operator processes elect one leader, which hands over when it is killed", async () => {
    await kube.operator?.close();
    kube.operator = undefined;
    const dir = await mkdtemp(join(tmpdir(), "darkbloom-operators-"));
    const kubeconfig = join(dir, "kubeconfig");
    await writeFile(kubeconfig, kube.env.operatorKubeconfigYaml, { mode: 0o600 });
    const processes = new Map<string, ChildProcess>();
    const start = (name: string) => {
      const child = spawn(
        process.execPath,
        [
          join(import.meta.dirname, "../../operator/bin/darkbloom-operator.js"),
          "run",
          ...["--kubeconfig", kubeconfig, "--lease-namespace", "darkbloom-system"],
          ...["--lease-duration", "4s", "--renew-deadline", "3s", "--retry-period", "500ms"],
          ...["--health-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--log-level", "warn"],
        ],
        { env: { ...process.env, POD_NAME: name }, stdio: "ignore" },
      );
      processes.set(name, child);
    };
    const holder = async () =>
      ((
        await admin()
          .get<Json>(LEASES, "darkbloom-system", "darkbloom-operator")
          .catch(() => undefined)
      )?.spec?.holderIdentity as string | undefined) ?? "";
    try {
      start("operator-a");
      start("operator-b");
      await expect.poll(holder, { timeout: 20_000, interval: 250 }).toMatch(/^operator-[ab]$/);
      const leader = await holder();
      const follower = leader === "operator-a" ? "operator-b" : "operator-a";
      const killedAt = Date.now();
      processes.get(leader)?.kill("SIGKILL");
      await expect.poll(holder, { timeout: 15_000, interval: 250 }).toBe(follower);
      // Within the lease duration after the leader's last renewal, plus the follower's retry period.
      expect(Date.now() - killedAt).toBeLessThan(4_000 + 2_000);
      // And the new leader reconciles: a scale change reaches the Deployment.
      await admin().mergePatch(COORDINATORS, ns(), NAME, { spec: { replicas: 3 } });
      await expect
        .poll(async () => (await pods()).filter(isReady).length, { timeout: 60_000, interval: 500 })
        .toBe(3);
      await admin().mergePatch(COORDINATORS, ns(), NAME, { spec: { replicas: 2 } });
      await expect.poll(async () => (await pods()).length, { timeout: 60_000, interval: 500 }).toBe(2);
      // SIGTERM: the leader releases the lease on its way out.
      const exited = new Promise((resolve) => processes.get(follower)?.once("exit", resolve));
      processes.get(follower)?.kill("SIGTERM");
      await exited;
      expect(await holder()).toBe("");
    } finally {
      for (const child of processes.values()) child.kill("SIGKILL");
      await rm(dir, { recursive: true, force: true });
    }
    await kube.startOperator();
  }, 150_000);

  it("deleting the Coordinator removes everything it owned", async () => {
    await Promise.all(providers.splice(0).map((p) => p.stop()));
    await admin().delete(COORDINATORS, ns(), NAME);
    for (const type of OWNED_KINDS) {
      await expect
        .poll(async () => (await admin().list(type, ns())).items.length, { timeout: 60_000, interval: 500 })
        .toBe(0);
    }
    await expect.poll(async () => (await pods()).length, { timeout: 60_000, interval: 500 }).toBe(0);
    await expect
      .poll(
        () =>
          admin()
            .get(SECRETS, ns(), `${NAME}-peer`)
            .catch(() => undefined),
        { timeout: 30_000 },
      )
      .toBeUndefined();
    // The platform team's own Secrets stay.
    expect(await admin().get(SECRETS, ns(), "database")).toBeDefined();
  }, 120_000);

  it("every request the operator made was one its RBAC rules allow", () => {
    const made = kube.env.apiServer.audit.filter((entry) => entry.user === OPERATOR_USER);
    expect(made.length).toBeGreaterThan(50);
    expect(made.filter((entry) => entry.code === 403)).toEqual([]);
    const rules = [...OPERATOR_RULES, ...LEADER_ELECTION_RULES];
    const allowed = (entry: (typeof made)[number]) =>
      rules.some(
        (rule) =>
          rule.apiGroups.includes(entry.apiGroup) &&
          rule.resources.includes(
            entry.subresource ? `${entry.resource}/${entry.subresource}` : entry.resource,
          ) &&
          rule.verbs.includes(entry.verb),
      );
    const pairs = [
      ...new Set(
        made.map((e) => `${e.verb} ${e.apiGroup}/${e.resource}${e.subresource ? `/${e.subresource}` : ""}`),
      ),
    ];
    expect(
      pairs.filter(
        (pair) =>
          !allowed(
            made.find(
              (e) =>
                `${e.verb} ${e.apiGroup}/${e.resource}${e.subresource ? `/${e.subresource}` : ""}` === pair,
            )!,
          ),
      ),
    ).toEqual([]);
  });
});
