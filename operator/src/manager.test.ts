import { execFile } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { V1DeploymentSpec } from "@kubernetes/client-node";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Coordinator } from "./api/v1alpha1/coordinator-types.js";
import { migrationJobName } from "./controllers/coordinator/resources/migration-job.js";
import { RELEASE_FINALIZER } from "./controllers/provider-release/controller.js";
import { type OperatorOptions, type RunningOperator, startOperator } from "./manager.js";
import {
  COORDINATORS,
  DEPLOYMENTS,
  EVENTS,
  JOBS,
  POD_DISRUPTION_BUDGETS,
  PROVIDER_RELEASES,
  SECRETS,
  SERVICES,
} from "./resource-types.js";
import { isNotFound, type KubeObject } from "./runtime/kube-api.js";
import { OPERATOR_USER, type OperatorTestEnv, startOperatorEnv } from "./testing/operator-env.js";

// The operator against the strict fake API server alone (no kubelet: nothing runs, so the tests play
// the Job controller where they need a migration to finish). Whole-cluster behaviour, with real
// coordinator processes, is in tests/kubernetes.

let env: OperatorTestEnv;
const log = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
const running: RunningOperator[] = [];

beforeAll(async () => {
  env = await startOperatorEnv({ apiServer: { watchCloseAfterMs: [2_000, 4_000], bookmarkIntervalMs: 500 } });
  await secret("db", { url: "postgres://coordinator:secret@postgres:5432/darkbloom" });
  await secret("admin", { "admin-key": "dbadm_test" });
});
afterAll(async () => {
  await env?.close();
});
afterEach(async () => {
  await Promise.all(running.splice(0).map((o) => o.close()));
});

async function operator(options: Partial<OperatorOptions> = {}): Promise<RunningOperator> {
  const started = await startOperator({ kubeConfig: env.operatorKubeConfig, log, ...options });
  running.push(started);
  return started;
}

async function secret(name: string, data: Record<string, string>): Promise<void> {
  await env.admin.create(SECRETS, {
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name, namespace: env.namespace },
    data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString("base64")])),
  });
}

/** A self-signed certificate and its key (PEM), made by the openssl CLI: Node cannot make X.509. */
async function certificate(name: string): Promise<{ cert: string; key: string }> {
  const dir = await mkdtemp(join(tmpdir(), "darkbloom-operator-cert-"));
  try {
    const [cert, key] = [join(dir, "tls.crt"), join(dir, "tls.key")];
    await promisify(execFile)("openssl", [
      ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"],
      ...["-keyout", key, "-out", cert, "-days", "2", "-subj", `/CN=${name}`],
    ]);
    return { cert: await readFile(cert, "utf8"), key: await readFile(key, "utf8") };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const encoded = (data: Record<string, string>) =>
  Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString("base64")]));

function coordinator(name: string, spec: Record<string, unknown> = {}): KubeObject {
  return {
    apiVersion: "darkbloom.dev/v1alpha1",
    kind: "Coordinator",
    metadata: { name, namespace: env.namespace },
    spec: {
      image: "registry.example/darkbloom/coordinator:1.0.0",
      database: { secretRef: { name: "db" } },
      adminKeySecretRef: { name: "admin" },
      ...spec,
    },
  };
}

const get = <T extends KubeObject>(type: Parameters<OperatorTestEnv["admin"]["get"]>[0], name: string) =>
  env.admin
    .get<T>(type, env.namespace, name)
    .catch((e: unknown) => (isNotFound(e) ? undefined : Promise.reject(e)));

type CoordinatorObject = Coordinator & KubeObject;
const condition = (c: CoordinatorObject | undefined, type: string) =>
  c?.status?.conditions?.find((x) => x.type === type);

/** Plays the Job controller: the migration Job finished with `type`. */
async function finishJob(name: string, type: "Complete" | "Failed"): Promise<void> {
  const job = await env.admin.get<KubeObject & { status?: Record<string, unknown> }>(
    JOBS,
    env.namespace,
    name,
  );
  const now = new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
  await env.admin.update(
    JOBS,
    {
      ...job,
      status: {
        startTime: now,
        ...(type === "Complete" ? { succeeded: 1, completionTime: now } : { failed: 3 }),
        conditions: [
          ...(type === "Complete"
            ? [{ type: "SuccessCriteriaMet", status: "True", lastTransitionTime: now }]
            : []),
          {
            type,
            status: "True",
            reason: type === "Complete" ? "CompletionsReached" : "BackoffLimitExceeded",
            message:
              type === "Complete"
                ? "Reached expected number of succeeded pods"
                : "Job has reached the specified backoff limit",
            lastTransitionTime: now,
          },
        ],
      },
    },
    "status",
  );
}

/** The operator's writes so far (events aside): what a converged reconcile must not add to. */
function operatorWrites(): string[] {
  return env.apiServer.audit
    .filter(
      (e) =>
        e.user === OPERATOR_USER && !["get", "list", "watch"].includes(e.verb) && e.resource !== "events",
    )
    .map((e) => `${e.verb} ${e.resource}${e.subresource ? `/${e.subresource}` : ""} ${e.name ?? ""}`);
}

describe("the Coordinator controller", () => {
  it("migrates first, then deploys; a reconcile after convergence writes nothing", async () => {
    await operator();
    const spec = coordinator("alpha", { replicas: 3, config: { minTrust: "none", queueDepth: 64 } });
    await env.admin.create(COORDINATORS, spec);
    const image = "registry.example/darkbloom/coordinator:1.0.0";
    const created = (await get<CoordinatorObject>(COORDINATORS, "alpha")) as CoordinatorObject;
    // The database's keyed hash (the admin key is the key): the Job's name never carries the URL.
    const database = createHmac("sha256", "dbadm_test")
      .update("postgres://coordinator:secret@postgres:5432/darkbloom")
      .digest("hex");
    const jobName = migrationJobName(created, { image, database: database.slice(0, 16) });
    await expect.poll(() => get(JOBS, jobName), { timeout: 10_000 }).toBeDefined();
    await expect
      .poll(async () => condition(await get<CoordinatorObject>(COORDINATORS, "alpha"), "Migrated")?.reason, {
        timeout: 10_000,
      })
      .toBe("MigrationRunning");
    // Nothing runs the new image before its migration succeeded.
    expect(await get(DEPLOYMENTS, "alpha")).toBeUndefined();
    expect(await get(SERVICES, "alpha")).toBeDefined();
    expect(await get(POD_DISRUPTION_BUDGETS, "alpha")).toBeDefined();
    const peer = await get<KubeObject & { data?: Record<string, string> }>(SECRETS, "alpha-peer");
    expect(Buffer.from(peer?.data?.token ?? "", "base64").length).toBeGreaterThanOrEqual(32);

    await finishJob(jobName, "Complete");
    await expect.poll(() => get(DEPLOYMENTS, "alpha"), { timeout: 10_000 }).toBeDefined();
    const deployment = (await get<KubeObject & { spec: V1DeploymentSpec }>(
      DEPLOYMENTS,
      "alpha",
    )) as KubeObject & {
      spec: V1DeploymentSpec;
    };
    expect(deployment.metadata?.ownerReferences).toEqual([
      expect.objectContaining({
        kind: "Coordinator",
        name: "alpha",
        uid: created.metadata.uid,
        controller: true,
      }),
    ]);
    expect(deployment.spec.replicas).toBe(3);
    expect(deployment.spec.strategy).toEqual({
      type: "RollingUpdate",
      rollingUpdate: { maxSurge: 1, maxUnavailable: 0 },
    });
    const container = deployment.spec.template.spec?.containers[0];
    expect(container?.image).toBe(image);
    expect(container?.args).toContain("check");
    expect(container?.env).toEqual(
      expect.arrayContaining([
        { name: "DARKBLOOM_QUEUE_DEPTH", value: "64" },
        { name: "DARKBLOOM_MIN_TRUST", value: "none" },
        { name: "DATABASE_URL", valueFrom: { secretKeyRef: { name: "db", key: "url" } } },
      ]),
    );
    const status = await expect
      .poll(async () => (await get<CoordinatorObject>(COORDINATORS, "alpha"))?.status, { timeout: 10_000 })
      .toMatchObject({
        migratedImage: image,
        selector: expect.stringContaining("app.kubernetes.io/instance=alpha"),
      });
    void status;

    // Converged: poke the resource (metadata only) and wait for the operator to have seen it.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const before = operatorWrites();
    await env.admin.mergePatch(COORDINATORS, env.namespace, "alpha", {
      metadata: { annotations: { poke: "1" } },
    });
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(operatorWrites()).toEqual(before);
  });

  it("rotates the peer token on request in one roll, then drops the previous token once rolled out", async () => {
    await operator();
    await env.admin.create(COORDINATORS, coordinator("eta", { replicas: 2 }));
    const job = async () =>
      (await env.admin.list<KubeObject>(JOBS, env.namespace)).items.find((j) =>
        j.metadata?.name?.startsWith("eta-migrate-"),
      );
    await expect.poll(job, { timeout: 10_000 }).toBeDefined();
    await finishJob((await job())?.metadata?.name ?? "", "Complete");
    type Deployment = KubeObject & { spec: V1DeploymentSpec; status?: Record<string, unknown> };
    type PeerSecret = KubeObject & { data: Record<string, string> };
    const configHash = async () =>
      (await get<Deployment>(DEPLOYMENTS, "eta"))?.spec.template.metadata?.annotations?.[
        "darkbloom.dev/config-hash"
      ];
    const peer = async () => {
      const secret = (await get<PeerSecret>(SECRETS, "eta-peer")) as PeerSecret;
      const decoded = (key: string) =>
        secret.data[key] === undefined ? undefined : Buffer.from(secret.data[key], "base64").toString("utf8");
      return {
        token: decoded("token") ?? "",
        previous: decoded("previous"),
        keys: Object.keys(secret.data).sort(),
        rotation: secret.metadata?.annotations?.["darkbloom.dev/peer-token-rotation"],
      };
    };
    /** Plays the Deployment controller: every replica of the current template updated and available. */
    const rollOut = async () => {
      const d = (await get<Deployment>(DEPLOYMENTS, "eta")) as Deployment;
      const counts = { replicas: 2, updatedReplicas: 2, readyReplicas: 2, availableReplicas: 2 };
      await env.admin.update(
        DEPLOYMENTS,
        { ...d, status: { observedGeneration: d.metadata?.generation, ...counts } },
        "status",
      );
    };
    const previousEnv = async () =>
      (await get<Deployment>(DEPLOYMENTS, "eta"))?.spec.template.spec?.containers[0]?.env?.find(
        (v) => v.name === "DARKBLOOM_PREVIOUS_PEER_TOKEN",
      );
    await expect.poll(configHash, { timeout: 10_000 }).toBeDefined();
    const first = await configHash();
    const { token: original } = await peer();
    expect(await previousEnv()).toBeUndefined();
    await rollOut();

    // Asked for: the token moves to previous and a new one is written, in one Secret update.
    await env.admin.mergePatch(COORDINATORS, env.namespace, "eta", {
      metadata: { annotations: { "darkbloom.dev/rotate-peer-token": "1733390000" } },
    });
    await expect
      .poll(peer, { timeout: 10_000 })
      .toMatchObject({ previous: original, rotation: "1733390000" });
    const rotated = await peer();
    expect(rotated.token).not.toBe(original);
    expect(rotated.token.length).toBeGreaterThanOrEqual(32);
    expect(rotated.keys).toEqual(["previous", "token"]);
    expect(
      env.apiServer.audit.filter(
        (e) => e.resource === "secrets" && e.name === "eta-peer" && e.verb === "update",
      ),
    ).toHaveLength(1);
    // The pods roll once, reading both tokens.
    await expect.poll(configHash, { timeout: 10_000 }).not.toBe(first);
    const during = await configHash();
    expect(await previousEnv()).toEqual({
      name: "DARKBLOOM_PREVIOUS_PEER_TOKEN",
      valueFrom: { secretKeyRef: { name: "eta-peer", key: "previous", optional: true } },
    });
    // Not rolled out yet: the previous token stays.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect((await peer()).previous).toBe(original);

    // Every replica runs the new template: the previous token is dropped, and the pods roll again.
    await rollOut();
    await expect.poll(async () => (await peer()).previous, { timeout: 10_000 }).toBeUndefined();
    expect(await peer()).toMatchObject({ token: rotated.token, keys: ["token"], rotation: "1733390000" });
    await expect.poll(configHash, { timeout: 10_000 }).not.toBe(during);
    expect(await configHash()).not.toBe(first);
    expect(await previousEnv()).toBeUndefined();
    await rollOut();

    const events = (
      await env.admin.list<KubeObject & { reason?: string; message?: string }>(EVENTS, env.namespace)
    ).items.filter((e) => (e as { involvedObject?: { name?: string } }).involvedObject?.name === "eta");
    expect(events.map((e) => e.reason)).toEqual(
      expect.arrayContaining(["PeerTokenRotated", "PeerTokenPreviousDropped"]),
    );
    // No token in an Event or in the Coordinator's status.
    const shown = JSON.stringify([events, (await get(COORDINATORS, "eta"))?.status]);
    for (const token of [original, rotated.token]) expect(shown).not.toContain(token);

    // Converged: the same annotation value again, and a reconcile, write nothing.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const before = operatorWrites();
    await env.admin.mergePatch(COORDINATORS, env.namespace, "eta", {
      metadata: { annotations: { "darkbloom.dev/rotate-peer-token": "1733390000", poke: "1" } },
    });
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(operatorWrites()).toEqual(before);
    expect((await peer()).token).toBe(rotated.token);
  });

  it("a missing Secret is Degraded and touches nothing; the Secret's arrival resumes the reconcile", async () => {
    await operator();
    await env.admin.create(
      COORDINATORS,
      coordinator("beta", { database: { secretRef: { name: "beta-db" } } }),
    );
    await expect
      .poll(async () => condition(await get<CoordinatorObject>(COORDINATORS, "beta"), "Degraded"), {
        timeout: 10_000,
      })
      .toMatchObject({
        status: "True",
        reason: "SecretMissing",
        message: expect.stringContaining("beta-db"),
      });
    expect(
      env.apiServer.audit.filter(
        (e) => e.verb === "create" && e.resource === "jobs" && e.name?.startsWith("beta"),
      ),
    ).toEqual([]);
    await secret("beta-db", { wrong: "x" });
    await expect
      .poll(async () => condition(await get<CoordinatorObject>(COORDINATORS, "beta"), "Degraded")?.reason, {
        timeout: 10_000,
      })
      .toBe("SecretKeyMissing");
    await env.admin.delete(SECRETS, env.namespace, "beta-db");
    await secret("beta-db", { url: "postgres://beta@postgres/beta" });
    await expect
      .poll(async () => condition(await get<CoordinatorObject>(COORDINATORS, "beta"), "Degraded")?.status, {
        timeout: 10_000,
      })
      .toBe("False");
    expect(condition(await get<CoordinatorObject>(COORDINATORS, "beta"), "Migrated")?.reason).toBe(
      "MigrationRunning",
    );
  });

  it("serves TLS from a Secret it checks first, and a renewed certificate does not roll the pods", async () => {
    const [first, renewed] = await Promise.all([certificate("zeta-1"), certificate("zeta-2")]);
    await operator();
    await env.admin.create(
      COORDINATORS,
      coordinator("zeta", { peerPort: 8443, tls: { secretName: "zeta-tls" } }),
    );
    const degraded = async () => condition(await get<CoordinatorObject>(COORDINATORS, "zeta"), "Degraded");
    await expect.poll(degraded, { timeout: 10_000 }).toMatchObject({
      status: "True",
      reason: "SecretMissing",
      message: expect.stringContaining("zeta-tls"),
    });
    // The admin calls trust the Secret's ca.crt: without the Secret a release cannot be synced.
    await env.admin.create(PROVIDER_RELEASES, {
      apiVersion: "darkbloom.dev/v1alpha1",
      kind: "ProviderRelease",
      metadata: { name: "zeta-r1", namespace: env.namespace },
      spec: {
        coordinatorRef: { name: "zeta" },
        version: "1.2.3",
        platform: "linux-x64",
        binarySha256: "ab".repeat(32),
        bundleSha256: "cd".repeat(32),
        url: "https://releases.example/darkbloom-1.2.3-linux-x64.tar.gz",
      },
    });
    type Release = KubeObject & { status?: { conditions?: { type: string; reason: string }[] } };
    await expect
      .poll(
        async () =>
          (await get<Release>(PROVIDER_RELEASES, "zeta-r1"))?.status?.conditions?.find(
            (c) => c.type === "Synced",
          )?.reason,
        { timeout: 10_000 },
      )
      .toBe("TLSSecretMissing");
    await env.admin.mergePatch(PROVIDER_RELEASES, env.namespace, "zeta-r1", {
      metadata: { finalizers: null },
    });
    await env.admin.delete(PROVIDER_RELEASES, env.namespace, "zeta-r1");

    // A key that is not the certificate's would crash the replicas at start: Degraded, nothing runs.
    await env.admin.create(SECRETS, {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name: "zeta-tls", namespace: env.namespace },
      type: "kubernetes.io/tls",
      data: encoded({ "tls.crt": first.cert, "tls.key": renewed.key }),
    });
    await expect.poll(degraded, { timeout: 10_000 }).toMatchObject({
      reason: "CertificateInvalid",
      message: "Secret zeta-tls: tls.key is not the key of the certificate in tls.crt",
    });
    expect(env.apiServer.audit.filter((e) => e.resource === "jobs" && e.name?.startsWith("zeta"))).toEqual(
      [],
    );
    const tlsSecret = () =>
      env.admin.get<KubeObject & { data: Record<string, string> }>(SECRETS, env.namespace, "zeta-tls");
    const writeTls = async (data: Record<string, string>) =>
      env.admin.update(SECRETS, { ...(await tlsSecret()), data: encoded(data) });
    await writeTls({ "tls.crt": first.cert, "tls.key": first.key });
    await expect.poll(async () => (await degraded())?.status, { timeout: 10_000 }).toBe("False");
    const job = async () =>
      (await env.admin.list<KubeObject>(JOBS, env.namespace)).items.find((j) =>
        j.metadata?.name?.startsWith("zeta-migrate-"),
      );
    await expect.poll(job, { timeout: 10_000 }).toBeDefined();
    await finishJob((await job())?.metadata?.name ?? "", "Complete");
    type Deployment = KubeObject & { spec: V1DeploymentSpec };
    await expect.poll(() => get(DEPLOYMENTS, "zeta"), { timeout: 10_000 }).toBeDefined();
    const deployed = (await get<Deployment>(DEPLOYMENTS, "zeta")) as Deployment;
    const pod = deployed.spec.template.spec;
    expect(pod?.volumes).toContainEqual(
      expect.objectContaining({ name: "tls", secret: expect.objectContaining({ secretName: "zeta-tls" }) }),
    );
    expect(pod?.containers[0]?.args).toEqual(expect.arrayContaining(["--tls-cert", "--peer-plaintext"]));
    expect(JSON.stringify(deployed)).not.toContain(Buffer.from(first.cert).toString("base64"));

    // The renewal, seen by a reconcile (the bad pair in between turns Degraded on, the renewed one
    // off): the Deployment is as it was, so no pod rolls; the kubelet updates the mounted files.
    await writeTls({ "tls.crt": renewed.cert, "tls.key": first.key });
    await expect.poll(async () => (await degraded())?.reason, { timeout: 10_000 }).toBe("CertificateInvalid");
    await writeTls({ "tls.crt": renewed.cert, "tls.key": renewed.key });
    await expect.poll(async () => (await degraded())?.status, { timeout: 10_000 }).toBe("False");
    const after = (await get<Deployment>(DEPLOYMENTS, "zeta")) as Deployment;
    expect(after.metadata?.generation).toBe(deployed.metadata?.generation);
    expect(after.spec.template).toEqual(deployed.spec.template);

    // Another Secret is another mount: that rolls the pods.
    await secret("zeta-tls-2", { "tls.crt": renewed.cert, "tls.key": renewed.key });
    await env.admin.mergePatch(COORDINATORS, env.namespace, "zeta", {
      spec: { tls: { secretName: "zeta-tls-2" } },
    });
    await expect
      .poll(
        async () =>
          (await get<Deployment>(DEPLOYMENTS, "zeta"))?.spec.template.metadata?.annotations?.[
            "darkbloom.dev/config-hash"
          ],
        { timeout: 10_000 },
      )
      .not.toBe(deployed.spec.template.metadata?.annotations?.["darkbloom.dev/config-hash"]);
  });

  it("migrates a new database before the replicas use it, even on the same image", async () => {
    await operator();
    await secret("eps-db", { url: "postgres://eps@old-postgres/eps" });
    await env.admin.create(
      COORDINATORS,
      coordinator("epsilon", { database: { secretRef: { name: "eps-db" } } }),
    );
    const jobs = async () =>
      (await env.admin.list<KubeObject>(JOBS, env.namespace)).items
        .map((j) => j.metadata?.name ?? "")
        .filter((n) => n.startsWith("epsilon-migrate-"));
    await expect.poll(jobs, { timeout: 10_000 }).toHaveLength(1);
    const [first] = await jobs();
    await finishJob(first as string, "Complete");
    type Deployment = KubeObject & { spec: V1DeploymentSpec };
    const configHash = async () =>
      (await get<Deployment>(DEPLOYMENTS, "epsilon"))?.spec.template.metadata?.annotations?.[
        "darkbloom.dev/config-hash"
      ];
    await expect.poll(configHash, { timeout: 10_000 }).toBeDefined();
    const before = await configHash();

    const stored = await env.admin.get<KubeObject & { data: Record<string, string> }>(
      SECRETS,
      env.namespace,
      "eps-db",
    );
    await env.admin.update(SECRETS, {
      ...stored,
      data: { url: Buffer.from("postgres://eps@new-postgres/eps").toString("base64") },
    });
    await expect.poll(jobs, { timeout: 10_000 }).toHaveLength(2);
    const second = (await jobs()).find((n) => n !== first) as string;
    expect(condition(await get<CoordinatorObject>(COORDINATORS, "epsilon"), "Migrated")?.reason).toBe(
      "MigrationRunning",
    );
    // The pods keep the old database until the new one is migrated.
    expect(await configHash()).toBe(before);
    await finishJob(second, "Complete");
    await expect.poll(configHash, { timeout: 10_000 }).not.toBe(before);
  });

  it("never adopts an object of the name it needs that someone else made: Degraded, NotOwned", async () => {
    await operator();
    await env.admin.create(SERVICES, {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "delta", namespace: env.namespace },
      spec: { ports: [{ port: 80 }], selector: { app: "theirs" } },
    });
    await env.admin.create(COORDINATORS, coordinator("delta"));
    await expect
      .poll(async () => condition(await get<CoordinatorObject>(COORDINATORS, "delta"), "Degraded"), {
        timeout: 10_000,
      })
      .toMatchObject({
        status: "True",
        reason: "NotOwned",
        message: expect.stringContaining("Service delta exists"),
      });
    const theirs = await get<KubeObject & { spec: { selector: Record<string, string> } }>(SERVICES, "delta");
    expect(theirs?.spec.selector).toEqual({ app: "theirs" });
  });

  it("keeps reconciling through API server errors, closed watches and expired resource versions", async () => {
    const op = await operator();
    env.apiServer.injectFault({ verb: "list", resource: "coordinators", code: 500, times: 2 });
    env.apiServer.injectFault({ verb: "watch", resource: "coordinators", code: 500, times: 2 });
    env.apiServer.compactHistory();
    env.apiServer.closeWatches();
    await env.admin.create(COORDINATORS, coordinator("gamma"));
    await expect
      .poll(async () => condition(await get<CoordinatorObject>(COORDINATORS, "gamma"), "Migrated")?.reason, {
        timeout: 20_000,
      })
      .toBe("MigrationRunning");
    const restarts = await op.metrics.registry.getSingleMetricAsString(
      "darkbloom_operator_informer_restarts_total",
    );
    expect(restarts).toMatch(/resource="coordinators"\} [1-9]/);
  });
});

describe("leader election", () => {
  const lease = {
    namespace: "darkbloom-system",
    name: "darkbloom-operator",
    leaseDurationMs: 3_000,
    renewDeadlineMs: 2_000,
    retryPeriodMs: 250,
  };

  it("one of two operators leads; the leader's close releases the lease and the other takes over at once", async () => {
    const first = await operator({ leaderElection: lease, identity: "first" });
    await expect.poll(() => first.isReconciling(), { timeout: 5_000 }).toBe(true);
    const second = await operator({ leaderElection: lease, identity: "second" });
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(second.isLeader()).toBe(false);
    const handedOver = Date.now();
    await first.close();
    await expect.poll(() => second.isReconciling(), { timeout: 5_000 }).toBe(true);
    // Released, not expired: the follower's next try (a retry period) takes it.
    expect(Date.now() - handedOver).toBeLessThan(lease.leaseDurationMs);
    const held = await env.admin.get<
      KubeObject & { spec: { holderIdentity: string; leaseTransitions: number } }
    >(
      { group: "coordination.k8s.io", version: "v1", plural: "leases", kind: "Lease", namespaced: true },
      "darkbloom-system",
      "darkbloom-operator",
    );
    expect(held.spec.holderIdentity).toBe("second");
  });
});

describe("the ProviderRelease controller", () => {
  it("holds a finalizer, says when its coordinator is missing, and lets the resource go once deleted", async () => {
    await operator();
    await env.admin.create(PROVIDER_RELEASES, {
      apiVersion: "darkbloom.dev/v1alpha1",
      kind: "ProviderRelease",
      metadata: { name: "r1", namespace: env.namespace },
      spec: {
        coordinatorRef: { name: "nowhere" },
        version: "1.2.3",
        platform: "linux-x64",
        binarySha256: "ab".repeat(32),
        bundleSha256: "cd".repeat(32),
        url: "https://releases.example/darkbloom-1.2.3-linux-x64.tar.gz",
      },
    });
    type Release = KubeObject & { status?: { conditions?: { type: string; reason: string }[] } };
    await expect
      .poll(
        async () =>
          (await get<Release>(PROVIDER_RELEASES, "r1"))?.status?.conditions?.find((c) => c.type === "Synced")
            ?.reason,
        { timeout: 10_000 },
      )
      .toBe("CoordinatorNotFound");
    expect((await get(PROVIDER_RELEASES, "r1"))?.metadata?.finalizers).toContain(RELEASE_FINALIZER);
    await env.admin.delete(PROVIDER_RELEASES, env.namespace, "r1");
    await expect.poll(() => get(PROVIDER_RELEASES, "r1"), { timeout: 10_000 }).toBeUndefined();
  });
});
