import { describe, expect, it } from "vitest";
import { eventually, openWatch, useFakeApiServer } from "./test-client.js";

// Deletion: finalizers, preconditions, propagation policies and the garbage collector, namespace
// and CRD-less cleanup.

const { api, server } = useFakeApiServer();

const CM = "/api/v1/namespaces/default/configmaps";

async function exists(path: string): Promise<boolean> {
  return (await api.get(path)).status === 200;
}

async function gone(path: string): Promise<true | undefined> {
  return (await exists(path)) ? undefined : true;
}

function ownedBy(owner: { metadata: { name: string; uid: string } }, block = false) {
  return {
    apiVersion: "v1",
    kind: "ConfigMap",
    name: owner.metadata.name,
    uid: owner.metadata.uid,
    ...(block ? { blockOwnerDeletion: true } : {}),
  };
}

describe("finalizers", () => {
  it("a delete marks the object; removing the last finalizer removes it", async () => {
    await api.post(CM, { metadata: { name: "fin", finalizers: ["example.com/hold"] } });
    const watch = await openWatch(server(), `${CM}?watch=true&fieldSelector=metadata.name%3Dfin`);
    expect((await watch.next()).type).toBe("ADDED");
    const res = await api.delete(`${CM}/fin`);
    expect(res.status).toBe(200);
    expect(res.body.metadata.deletionTimestamp).toBeDefined();
    expect(res.body.metadata.deletionGracePeriodSeconds).toBe(0);
    const marked = await watch.next();
    expect(marked.type).toBe("MODIFIED");
    expect(await exists(`${CM}/fin`)).toBe(true);

    // Adding a finalizer now is forbidden; other changes are allowed.
    const more = await api.patch(
      `${CM}/fin`,
      { metadata: { finalizers: ["example.com/hold", "example.com/more"] } },
      "application/merge-patch+json",
    );
    expect(more.status).toBe(422);
    expect(more.body.details.causes[0]).toEqual({
      reason: "FieldValueForbidden",
      message:
        'Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{"example.com/more"}',
      field: "metadata.finalizers",
    });
    expect(
      (await api.patch(`${CM}/fin`, { data: { still: "editable" } }, "application/merge-patch+json")).status,
    ).toBe(200);
    expect((await watch.next()).type).toBe("MODIFIED");

    const cleared = await api.patch(
      `${CM}/fin`,
      { metadata: { finalizers: null } },
      "application/merge-patch+json",
    );
    expect(cleared.status).toBe(200);
    const deleted = await watch.next();
    expect(deleted.type).toBe("DELETED");
    expect(deleted.object.metadata.finalizers).toBeUndefined();
    expect(await exists(`${CM}/fin`)).toBe(false);
    watch.close();
  });

  it("checks uid and resourceVersion preconditions", async () => {
    const { body } = await api.post(CM, { metadata: { name: "pre" } });
    const uid = await api.delete(`${CM}/pre`, { preconditions: { uid: "other" } });
    expect(uid.status).toBe(409);
    expect(uid.body.message).toBe(
      `Operation cannot be fulfilled on configmaps "pre": Precondition failed: UID in precondition: other, UID in object meta: ${body.metadata.uid}`,
    );
    expect((await api.delete(`${CM}/pre`, { preconditions: { resourceVersion: "1" } })).status).toBe(409);
    const ok = await api.delete(`${CM}/pre`, { preconditions: { uid: body.metadata.uid } });
    expect(ok.status).toBe(200);
    expect(ok.body).toMatchObject({
      kind: "Status",
      status: "Success",
      details: { name: "pre", kind: "configmaps" },
    });
  });
});

describe("graceful pod deletion", () => {
  const PODS = "/api/v1/namespaces/default/pods";
  const pod = (name: string, nodeName?: string) => ({
    metadata: { name },
    spec: {
      ...(nodeName ? { nodeName } : {}),
      terminationGracePeriodSeconds: 20,
      containers: [{ name: "c", image: "busybox" }],
    },
  });

  it("a pod on a node stays terminating for its grace period until its kubelet deletes it with grace 0", async () => {
    await api.post(PODS, pod("running", "node-1"));
    const before = Date.now();
    const res = await api.delete(`${PODS}/running`);
    expect(res.status).toBe(200);
    expect(res.body.metadata.deletionGracePeriodSeconds).toBe(20);
    const deadline = Date.parse(res.body.metadata.deletionTimestamp);
    expect(deadline).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000 + 19_000);
    // The kubelet still reports status meanwhile; the pod stays.
    await api.patch(
      `${PODS}/running/status`,
      { status: { phase: "Running" } },
      "application/merge-patch+json",
    );
    expect(await exists(`${PODS}/running`)).toBe(true);
    // A longer grace period does not extend it; a shorter one shortens it.
    const longer = await api.delete(`${PODS}/running`, { gracePeriodSeconds: 60 });
    expect(longer.body.metadata.deletionGracePeriodSeconds).toBe(20);
    const shorter = await api.delete(`${PODS}/running`, { gracePeriodSeconds: 5 });
    expect(shorter.body.metadata.deletionGracePeriodSeconds).toBe(5);
    const final = await api.delete(`${PODS}/running`, { gracePeriodSeconds: 0 });
    expect(final.status).toBe(200);
    expect(await exists(`${PODS}/running`)).toBe(false);
  });

  it("a pod no kubelet runs (unscheduled) is deleted at once", async () => {
    await api.post(PODS, pod("pending"));
    await api.delete(`${PODS}/pending`);
    expect(await exists(`${PODS}/pending`)).toBe(false);
  });
});

describe("garbage collection", () => {
  it("background: dependents whose owners are all gone are deleted shortly after", async () => {
    const owner = (await api.post(CM, { metadata: { name: "owner-bg" } })).body;
    const other = (await api.post(CM, { metadata: { name: "owner-other" } })).body;
    await api.post(CM, { metadata: { name: "dep-bg", ownerReferences: [ownedBy(owner)] } });
    await api.post(CM, { metadata: { name: "dep-two", ownerReferences: [ownedBy(owner), ownedBy(other)] } });
    await api.delete(`${CM}/owner-bg`);
    await eventually(() => gone(`${CM}/dep-bg`));
    // A dependent with another owner stays, its dangling reference removed.
    const two = await eventually(async () => {
      const res = await api.get(`${CM}/dep-two`);
      return res.body.metadata.ownerReferences.length === 1 ? res.body : undefined;
    });
    expect(two.metadata.ownerReferences[0].uid).toBe(other.metadata.uid);
  });

  it("deletes objects created with an owner that does not exist", async () => {
    await api.post(CM, {
      metadata: {
        name: "orphaned",
        ownerReferences: [{ apiVersion: "v1", kind: "ConfigMap", name: "ghost", uid: "1234" }],
      },
    });
    await eventually(() => gone(`${CM}/orphaned`));
  });

  it("ignores owners in another namespace, as the real collector does", async () => {
    const owner = (
      await api.post("/api/v1/namespaces/kube-system/configmaps", { metadata: { name: "elsewhere" } })
    ).body;
    await api.post(CM, { metadata: { name: "cross", ownerReferences: [ownedBy(owner)] } });
    await eventually(() => gone(`${CM}/cross`));
    expect(await exists("/api/v1/namespaces/kube-system/configmaps/elsewhere")).toBe(true);
  });

  it("accepts cluster-scoped owners of namespaced dependents", async () => {
    const ns = (await api.post("/api/v1/namespaces", { metadata: { name: "owner-ns" } })).body;
    await api.post(CM, {
      metadata: {
        name: "by-namespace",
        ownerReferences: [{ apiVersion: "v1", kind: "Namespace", name: "owner-ns", uid: ns.metadata.uid }],
      },
    });
    await new Promise((r) => setTimeout(r, 50));
    expect(await exists(`${CM}/by-namespace`)).toBe(true);
  });

  it("foreground: the owner waits (foregroundDeletion finalizer) until blocking dependents are gone", async () => {
    const owner = (await api.post(CM, { metadata: { name: "owner-fg" } })).body;
    await api.post(CM, {
      metadata: { name: "dep-fg", finalizers: ["example.com/slow"], ownerReferences: [ownedBy(owner, true)] },
    });
    const res = await api.delete(`${CM}/owner-fg`, { propagationPolicy: "Foreground" });
    expect(res.body.metadata.finalizers).toEqual(["foregroundDeletion"]);
    expect(res.body.metadata.deletionTimestamp).toBeDefined();
    const dep = await eventually(async () => {
      const d = await api.get(`${CM}/dep-fg`);
      return d.body.metadata.deletionTimestamp ? d.body : undefined;
    });
    expect(dep.metadata.finalizers).toContain("example.com/slow");
    await new Promise((r) => setTimeout(r, 50));
    expect(await exists(`${CM}/owner-fg`)).toBe(true);
    await api.patch(
      `${CM}/dep-fg`,
      [{ op: "remove", path: "/metadata/finalizers" }],
      "application/json-patch+json",
    );
    await eventually(() => gone(`${CM}/owner-fg`));
  });

  it("orphan: dependents lose their reference to the owner and stay", async () => {
    const owner = (await api.post(CM, { metadata: { name: "owner-or" } })).body;
    await api.post(CM, { metadata: { name: "dep-or", ownerReferences: [ownedBy(owner)] } });
    await api.delete(`${CM}/owner-or?propagationPolicy=Orphan`);
    await eventually(() => gone(`${CM}/owner-or`));
    const dep = await api.get(`${CM}/dep-or`);
    expect(dep.status).toBe(200);
    expect(dep.body.metadata.ownerReferences).toBeUndefined();
  });

  it("Jobs orphan their pods by default (batch/v1 compatibility)", async () => {
    const job = await api.post("/apis/batch/v1/namespaces/default/jobs", {
      metadata: { name: "j" },
      spec: { template: { spec: { restartPolicy: "Never", containers: [{ name: "c", image: "busybox" }] } } },
    });
    await api.post("/api/v1/namespaces/default/pods", {
      metadata: {
        name: "j-pod",
        ownerReferences: [
          { apiVersion: "batch/v1", kind: "Job", name: "j", uid: job.body.metadata.uid, controller: true },
        ],
      },
      spec: { restartPolicy: "Never", containers: [{ name: "c", image: "busybox" }] },
    });
    await api.delete("/apis/batch/v1/namespaces/default/jobs/j");
    await eventually(() => gone("/apis/batch/v1/namespaces/default/jobs/j"));
    expect(await exists("/api/v1/namespaces/default/pods/j-pod")).toBe(true);
  });
});

describe("namespaces", () => {
  it("a deleted namespace terminates: its content goes, then the namespace; creating in it is forbidden meanwhile", async () => {
    await api.post("/api/v1/namespaces", { metadata: { name: "doomed" } });
    await api.post("/api/v1/namespaces/doomed/configmaps", {
      metadata: { name: "held", finalizers: ["example.com/hold"] },
    });
    const res = await api.delete("/api/v1/namespaces/doomed");
    expect(res.status).toBe(200);
    expect(res.body.status.phase).toBe("Terminating");
    const refused = await api.post("/api/v1/namespaces/doomed/configmaps", { metadata: { name: "late" } });
    expect(refused.status).toBe(403);
    expect(refused.body.message).toBe(
      'configmaps "late" is forbidden: unable to create new content in namespace doomed because it is being terminated',
    );
    await eventually(async () =>
      (await api.get("/api/v1/namespaces/doomed/configmaps/held")).body.metadata.deletionTimestamp
        ? true
        : undefined,
    );
    expect(await exists("/api/v1/namespaces/doomed")).toBe(true);
    await api.patch(
      "/api/v1/namespaces/doomed/configmaps/held",
      { metadata: { finalizers: null } },
      "application/merge-patch+json",
    );
    await eventually(() => gone("/api/v1/namespaces/doomed"));
  });

  it("refuses to delete the default namespace", async () => {
    const res = await api.delete("/api/v1/namespaces/default");
    expect(res.status).toBe(403);
  });
});
