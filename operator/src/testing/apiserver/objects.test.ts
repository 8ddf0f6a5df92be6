import { beforeAll, describe, expect, it } from "vitest";
import { deployment, testClient, useFakeApiServer } from "./test-client.js";

// Object lifecycle over plain HTTP: metadata the server sets, resourceVersion, generation,
// optimistic concurrency, the status subresource, lists and selectors, and the error shapes.

const { api, server } = useFakeApiServer();

const DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments";

describe("create and get", () => {
  it("sets uid, creationTimestamp, resourceVersion and generation 1, and answers 201", async () => {
    const res = await api.post(DEPLOYMENTS, deployment("web"));
    expect(res.status).toBe(201);
    const m = res.body.metadata;
    expect(m.uid).toMatch(/^[0-9a-f-]{36}$/);
    expect(m.creationTimestamp).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    expect(m.resourceVersion).toMatch(/^\d+$/);
    expect(m.generation).toBe(1);
    expect(m.namespace).toBe("default");
    const got = await api.get(`${DEPLOYMENTS}/web`);
    expect(got.status).toBe(200);
    expect(got.body.metadata.resourceVersion).toBe(m.resourceVersion);
  });

  it("applies the defaults clients rely on", async () => {
    const { body } = await api.get(`${DEPLOYMENTS}/web`);
    expect(body.spec).toMatchObject({
      replicas: 1,
      revisionHistoryLimit: 10,
      progressDeadlineSeconds: 600,
      strategy: { type: "RollingUpdate", rollingUpdate: { maxSurge: "25%", maxUnavailable: "25%" } },
    });
    expect(body.spec.template.spec).toMatchObject({
      restartPolicy: "Always",
      terminationGracePeriodSeconds: 30,
      dnsPolicy: "ClusterFirst",
    });
    expect(body.spec.template.spec.containers[0]).toMatchObject({
      imagePullPolicy: "IfNotPresent",
      terminationMessagePath: "/dev/termination-log",
    });
    expect(body.status).toEqual({});
  });

  it("generates names from generateName", async () => {
    const res = await api.post("/api/v1/namespaces/default/configmaps", {
      metadata: { generateName: "cfg-" },
      data: { a: "b" },
    });
    expect(res.status).toBe(201);
    expect(res.body.metadata.name).toMatch(/^cfg-[bcdfghjklmnpqrstvwxz2456789]{5}$/);
  });

  it("does not store anything with dryRun=All", async () => {
    const res = await api.post("/api/v1/namespaces/default/configmaps?dryRun=All", {
      metadata: { name: "dry" },
    });
    expect(res.status).toBe(201);
    expect(res.body.metadata.uid).toBeDefined();
    expect((await api.get("/api/v1/namespaces/default/configmaps/dry")).status).toBe(404);
  });

  it("answers 409 AlreadyExists for a duplicate", async () => {
    const res = await api.post(DEPLOYMENTS, deployment("web"));
    expect(res.status).toBe(409);
    expect(res.body).toEqual({
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message: 'deployments.apps "web" already exists',
      reason: "AlreadyExists",
      details: { name: "web", group: "apps", kind: "deployments" },
      code: 409,
    });
  });

  it("answers 404 NotFound with the real message", async () => {
    const res = await api.get(`${DEPLOYMENTS}/nope`);
    expect(res.status).toBe(404);
    expect(res.body).toMatchObject({ reason: "NotFound", message: 'deployments.apps "nope" not found' });
    const pod = await api.get("/api/v1/namespaces/default/pods/nope");
    expect(pod.body.message).toBe('pods "nope" not found');
  });

  it("refuses to create in a namespace that does not exist", async () => {
    const res = await api.post("/apis/apps/v1/namespaces/ghost/deployments", deployment("x"));
    expect(res.status).toBe(404);
    expect(res.body.message).toBe('namespaces "ghost" not found');
  });

  it("answers 400 for a mismatched apiVersion, kind, namespace or a resourceVersion on create", async () => {
    const wrongVersion = await api.post(DEPLOYMENTS, { ...deployment("a"), apiVersion: "apps/v1beta1" });
    expect(wrongVersion.status).toBe(400);
    expect(wrongVersion.body.message).toContain("does not match the expected API version (apps/v1)");
    const wrongKind = await api.post(DEPLOYMENTS, { ...deployment("a"), kind: "StatefulSet" });
    expect(wrongKind.status).toBe(400);
    const wrongNs = await api.post(DEPLOYMENTS, {
      ...deployment("a"),
      metadata: { name: "a", namespace: "kube-system" },
    });
    expect(wrongNs.status).toBe(400);
    const withRv = await api.post(DEPLOYMENTS, {
      ...deployment("a"),
      metadata: { name: "a", resourceVersion: "5" },
    });
    expect(withRv.status).toBe(400);
    expect(withRv.body.message).toBe("resourceVersion should not be set on objects to be created");
  });

  it("answers 404 for unknown resources and 401 for unknown tokens", async () => {
    expect((await api.get("/apis/apps/v1/namespaces/default/widgets")).status).toBe(404);
    const anonymous = testClient(server(), "bogus");
    const res = await anonymous.get(DEPLOYMENTS);
    expect(res.status).toBe(401);
    expect(res.body).toMatchObject({ kind: "Status", reason: "Unauthorized", code: 401 });
  });

  it("has the default and kube-system namespaces", async () => {
    const { body } = await api.get("/api/v1/namespaces");
    expect(body.items.map((n: { metadata: { name: string } }) => n.metadata.name)).toEqual([
      "default",
      "kube-system",
    ]);
    expect(body.items[0].status.phase).toBe("Active");
    expect(body.items[0].metadata.labels).toEqual({ "kubernetes.io/metadata.name": "default" });
  });
});

describe("update", () => {
  it("bumps resourceVersion on every write and generation only for spec changes", async () => {
    const { body: before } = await api.get(`${DEPLOYMENTS}/web`);
    const labelled = structuredClone(before);
    labelled.metadata.labels = { tier: "front" };
    const res1 = await api.put(`${DEPLOYMENTS}/web`, labelled);
    expect(res1.status).toBe(200);
    expect(Number(res1.body.metadata.resourceVersion)).toBeGreaterThan(
      Number(before.metadata.resourceVersion),
    );
    expect(res1.body.metadata.generation).toBe(1);
    const scaled = structuredClone(res1.body);
    scaled.spec.replicas = 3;
    const res2 = await api.put(`${DEPLOYMENTS}/web`, scaled);
    expect(res2.body.metadata.generation).toBe(2);
  });

  it("answers 409 Conflict for a stale resourceVersion and accepts an update without one", async () => {
    const { body } = await api.get(`${DEPLOYMENTS}/web`);
    const stale = structuredClone(body);
    stale.metadata.resourceVersion = "1";
    const res = await api.put(`${DEPLOYMENTS}/web`, stale);
    expect(res.status).toBe(409);
    expect(res.body).toMatchObject({
      reason: "Conflict",
      message:
        'Operation cannot be fulfilled on deployments.apps "web": the object has been modified; please apply your changes to the latest version and try again',
    });
    delete stale.metadata.resourceVersion;
    stale.spec.replicas = 4;
    const unconditional = await api.put(`${DEPLOYMENTS}/web`, stale);
    expect(unconditional.status).toBe(200);
    expect(unconditional.body.spec.replicas).toBe(4);
  });

  it("answers 400 when the name in the body differs from the URL", async () => {
    const { body } = await api.get(`${DEPLOYMENTS}/web`);
    body.metadata.name = "other";
    const res = await api.put(`${DEPLOYMENTS}/web`, body);
    expect(res.status).toBe(400);
    expect(res.body.message).toBe("the name of the object (other) does not match the name on the URL (web)");
  });

  it("does not write when nothing changes (same resourceVersion)", async () => {
    const { body } = await api.get(`${DEPLOYMENTS}/web`);
    const res = await api.put(`${DEPLOYMENTS}/web`, body);
    expect(res.body.metadata.resourceVersion).toBe(body.metadata.resourceVersion);
  });

  it("answers 404 for an update of an absent object, but creates absent leases (AllowCreateOnUpdate)", async () => {
    expect((await api.put(`${DEPLOYMENTS}/absent`, deployment("absent"))).status).toBe(404);
    const lease = {
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: { name: "leader" },
      spec: { holderIdentity: "a", leaseDurationSeconds: 15 },
    };
    const res = await api.put("/apis/coordination.k8s.io/v1/namespaces/default/leases/leader", lease);
    expect(res.status).toBe(201);
  });
});

describe("status subresource", () => {
  it("ignores status on the main endpoint and changes only status on /status, without a generation bump", async () => {
    const { body } = await api.get(`${DEPLOYMENTS}/web`);
    const generation = body.metadata.generation;
    const viaMain = structuredClone(body);
    viaMain.status = { replicas: 9 };
    const res1 = await api.put(`${DEPLOYMENTS}/web`, viaMain);
    expect(res1.body.status).toEqual({});
    const viaStatus = structuredClone(res1.body);
    viaStatus.status = { replicas: 4, observedGeneration: generation };
    viaStatus.spec.replicas = 100;
    viaStatus.metadata.labels = { changed: "yes" };
    const res2 = await api.put(`${DEPLOYMENTS}/web/status`, viaStatus);
    expect(res2.status).toBe(200);
    expect(res2.body.status).toEqual({ replicas: 4, observedGeneration: generation });
    expect(res2.body.spec.replicas).toBe(4);
    expect(res2.body.metadata.labels).toEqual({ tier: "front" });
    expect(res2.body.metadata.generation).toBe(generation);
    const patched = await api.patch(
      `${DEPLOYMENTS}/web/status`,
      { status: { readyReplicas: 4 } },
      "application/merge-patch+json",
    );
    expect(patched.body.status).toMatchObject({ replicas: 4, readyReplicas: 4 });
  });

  it("keeps status on create for kinds without a status subresource and resets it for the others", async () => {
    const pod = await api.post("/api/v1/namespaces/default/pods", {
      metadata: { name: "p" },
      spec: { containers: [{ name: "c", image: "busybox" }] },
      status: { phase: "Running" },
    });
    expect(pod.body.status).toEqual({ phase: "Pending", qosClass: "BestEffort" });
    expect(pod.body.spec.containers[0].imagePullPolicy).toBe("Always");
  });
});

describe("lists and selectors", () => {
  beforeAll(async () => {
    for (const [name, labels] of [
      ["l1", { app: "a", tier: "x" }],
      ["l2", { app: "b", tier: "y" }],
      ["l3", { app: "c" }],
    ] as const) {
      await api.post("/api/v1/namespaces/default/configmaps", { metadata: { name, labels } });
    }
  });

  const names = async (query: string) => {
    const res = await api.get(`/api/v1/namespaces/default/configmaps?${query}`);
    expect(res.status).toBe(200);
    return res.body.items
      .map((i: { metadata: { name: string } }) => i.metadata.name)
      .filter((n: string) => n.startsWith("l"));
  };

  it("has a list kind and the list's resourceVersion", async () => {
    const res = await api.get("/api/v1/namespaces/default/configmaps");
    expect(res.body.kind).toBe("ConfigMapList");
    expect(res.body.apiVersion).toBe("v1");
    expect(res.body.metadata.resourceVersion).toMatch(/^\d+$/);
  });

  it("filters by label selector", async () => {
    expect(await names("labelSelector=app%3Da")).toEqual(["l1"]);
    expect(await names("labelSelector=app%3D%3Da")).toEqual(["l1"]);
    expect(await names("labelSelector=app!%3Da")).toEqual(["l2", "l3"]);
    expect(await names(`labelSelector=${encodeURIComponent("app in (a,b)")}`)).toEqual(["l1", "l2"]);
    expect(await names(`labelSelector=${encodeURIComponent("app notin (a,b)")}`)).toEqual(["l3"]);
    expect(await names("labelSelector=tier")).toEqual(["l1", "l2"]);
    expect(await names("labelSelector=!tier")).toEqual(["l3"]);
    expect(await names(`labelSelector=${encodeURIComponent("tier,app!=b")}`)).toEqual(["l1"]);
  });

  it("filters by field selector and refuses unsupported fields", async () => {
    expect(await names("fieldSelector=metadata.name%3Dl2")).toEqual(["l2"]);
    expect(await names("fieldSelector=metadata.name!%3Dl2")).toEqual(["l1", "l3"]);
    const all = await api.get("/api/v1/configmaps?fieldSelector=metadata.namespace%3Ddefault");
    expect(all.status).toBe(200);
    const bad = await api.get("/api/v1/namespaces/default/configmaps?fieldSelector=spec.foo%3Dx");
    expect(bad.status).toBe(400);
    expect(bad.body.message).toBe("field label not supported: spec.foo");
    const pods = await api.get("/api/v1/pods?fieldSelector=status.phase%3DPending,spec.nodeName%3D");
    expect(pods.body.items.map((p: { metadata: { name: string } }) => p.metadata.name)).toEqual(["p"]);
  });

  it("deletes a collection by label selector", async () => {
    const res = await api.delete("/api/v1/namespaces/default/configmaps?labelSelector=tier");
    expect(res.status).toBe(200);
    expect(res.body.kind).toBe("ConfigMapList");
    expect(await names("")).toEqual(["l3"]);
  });
});

describe("injected faults and audit", () => {
  it("answers the injected code for the next matching requests and records every request", async () => {
    server().injectFault({ verb: "get", resource: "deployments", code: 500, times: 2 });
    const first = await api.get(`${DEPLOYMENTS}/web`);
    expect(first.status).toBe(500);
    expect(first.body).toMatchObject({
      kind: "Status",
      status: "Failure",
      reason: "InternalError",
      code: 500,
    });
    expect((await api.get(`${DEPLOYMENTS}/web`)).status).toBe(500);
    expect((await api.get(`${DEPLOYMENTS}/web`)).status).toBe(200);
    const entries = server().audit.filter(
      (e) => e.resource === "deployments" && e.verb === "get" && e.name === "web",
    );
    expect(entries.slice(-3).map((e) => e.code)).toEqual([500, 500, 200]);
    expect(entries.at(-1)).toMatchObject({
      user: "kubernetes-admin",
      apiGroup: "apps",
      namespace: "default",
      subresource: "",
    });
  });
});
