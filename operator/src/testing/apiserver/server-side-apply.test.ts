import { describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { deployment, useFakeApiServer } from "./test-client.js";

// Server-side apply and managedFields: creation by apply, the fieldsV1 encoding, removal of fields
// an applier stops applying, conflicts and force, and the Update entries other writes record.

const { api } = useFakeApiServer();

const DEPLOY = "/apis/apps/v1/namespaces/default/deployments";
const CM = "/api/v1/namespaces/default/configmaps";
const APPLY = "application/apply-patch+yaml";

function apply(path: string, config: unknown, manager: string, extra = "") {
  return api.patch(`${path}?fieldManager=${manager}${extra}`, stringify(config), APPLY);
}

function managers(body: { metadata: { managedFields?: { manager: string; operation: string }[] } }) {
  return (body.metadata.managedFields ?? []).map((m) => `${m.manager}/${m.operation}`);
}

describe("server-side apply", () => {
  it("creates an absent object (YAML body) and records an Apply entry in the real encoding", async () => {
    const d = deployment("ssa");
    (d.metadata as Record<string, unknown>).labels = { app: "ssa" };
    const res = await apply(`${DEPLOY}/ssa`, d, "ops");
    expect(res.status).toBe(201);
    const [entry] = res.body.metadata.managedFields;
    expect(entry).toMatchObject({
      manager: "ops",
      operation: "Apply",
      apiVersion: "apps/v1",
      fieldsType: "FieldsV1",
    });
    expect(entry.time).toMatch(/Z$/);
    expect(entry.fieldsV1).toEqual({
      "f:metadata": { "f:labels": { "f:app": {} } },
      "f:spec": {
        "f:selector": {},
        "f:template": {
          "f:metadata": { "f:labels": { "f:app": {} } },
          "f:spec": { "f:containers": { 'k:{"name":"app"}': { ".": {}, "f:image": {}, "f:name": {} } } },
        },
      },
    });
  });

  it("requires a fieldManager (422 PatchOptions) and a matching name", async () => {
    const res = await api.patch(`${DEPLOY}/ssa`, stringify(deployment("ssa")), APPLY);
    expect(res.status).toBe(422);
    expect(res.body.message).toBe(
      'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
    );
    const wrong = await apply(`${DEPLOY}/ssa`, deployment("other"), "ops");
    expect(wrong.status).toBe(400);
  });

  it("removes fields the manager stops applying, unless someone else owns them", async () => {
    const d = deployment("ssa");
    (d.metadata as Record<string, unknown>).labels = { app: "ssa", extra: "1" };
    await apply(`${DEPLOY}/ssa`, d, "ops");
    // Another manager sets an annotation with a merge patch (an Update entry).
    await api.patch(
      `${DEPLOY}/ssa?fieldManager=editor`,
      { metadata: { annotations: { note: "x" } } },
      "application/merge-patch+json",
    );
    const res = await apply(`${DEPLOY}/ssa`, deployment("ssa"), "ops");
    expect(res.status).toBe(200);
    expect(res.body.metadata.labels).toBeUndefined();
    expect(res.body.metadata.annotations).toEqual({ note: "x" });
    expect(managers(res.body)).toEqual(["ops/Apply", "editor/Update"]);
  });

  it("reports conflicts with another manager's fields (409, FieldManagerConflict causes)", async () => {
    const d = deployment("ssa");
    (d.spec as Record<string, unknown>).replicas = 3;
    await apply(`${DEPLOY}/ssa`, d, "ops");
    const other = deployment("ssa");
    (other.spec as Record<string, unknown>).replicas = 5;
    const res = await apply(`${DEPLOY}/ssa`, other, "autoscaler");
    expect(res.status).toBe(409);
    expect(res.body).toMatchObject({
      reason: "Conflict",
      message: 'Apply failed with 1 conflict: conflict with "ops": .spec.replicas',
      details: {
        causes: [{ reason: "FieldManagerConflict", message: 'conflict with "ops"', field: ".spec.replicas" }],
      },
    });
  });

  it("shares ownership when the applied value is the same", async () => {
    const same = deployment("ssa");
    (same.spec as Record<string, unknown>).replicas = 3;
    const res = await apply(`${DEPLOY}/ssa`, same, "observer");
    expect(res.status).toBe(200);
    expect(managers(res.body)).toContain("observer/Apply");
  });

  it("moves ownership with force=true", async () => {
    const other = deployment("ssa");
    (other.spec as Record<string, unknown>).replicas = 5;
    const res = await apply(`${DEPLOY}/ssa`, other, "autoscaler", "&force=true");
    expect(res.status).toBe(200);
    expect(res.body.spec.replicas).toBe(5);
    const ops = res.body.metadata.managedFields.find((m: { manager: string }) => m.manager === "ops");
    expect(ops.fieldsV1["f:spec"]["f:replicas"]).toBeUndefined();
    // Forcing took replicas from every manager whose value differed: ops and observer.
    const observer = res.body.metadata.managedFields.find(
      (m: { manager: string }) => m.manager === "observer",
    );
    expect(observer.fieldsV1["f:spec"]["f:replicas"]).toBeUndefined();
    // ops no longer owns replicas: applying without it leaves it alone.
    const res2 = await apply(`${DEPLOY}/ssa`, deployment("ssa"), "ops");
    expect(res2.body.spec.replicas).toBe(5);
  });

  it("lists conflicts with several managers", async () => {
    const res = await apply(
      `${DEPLOY}/ssa`,
      {
        ...deployment("ssa"),
        metadata: { name: "ssa", annotations: { note: "y" } },
        spec: { ...(deployment("ssa").spec as object), replicas: 7 },
      },
      "third",
    );
    expect(res.status).toBe(409);
    expect(res.body.message).toBe(
      'Apply failed with 2 conflicts: conflicts with "autoscaler":\n- .spec.replicas\nconflicts with "editor" using apps/v1:\n- .metadata.annotations.note',
    );
  });

  it("records Update entries for create, update and patch, taking changed fields from other managers", async () => {
    const created = await api.post(`${CM}?fieldManager=creator`, {
      metadata: { name: "cm" },
      data: { a: "1", b: "2" },
    });
    expect(created.body.metadata.managedFields).toEqual([
      expect.objectContaining({
        manager: "creator",
        operation: "Update",
        apiVersion: "v1",
        fieldsV1: { "f:data": { "f:a": {}, "f:b": {} } },
      }),
    ]);
    const patched = await api.patch(
      `${CM}/cm?fieldManager=patcher`,
      { data: { b: "3" } },
      "application/merge-patch+json",
    );
    const byManager = Object.fromEntries(
      patched.body.metadata.managedFields.map((m: { manager: string; fieldsV1: unknown }) => [
        m.manager,
        m.fieldsV1,
      ]),
    );
    expect(byManager).toEqual({ creator: { "f:data": { "f:a": {} } }, patcher: { "f:data": { "f:b": {} } } });
    // Without fieldManager, the manager is the User-Agent's program name.
    const res = await api.request(
      "PATCH",
      `${CM}/cm`,
      { data: { c: "4" } },
      { "content-type": "application/merge-patch+json", "user-agent": "my-tool/1.2 (linux)" },
    );
    expect(managers(res.body)).toContain("my-tool/Update");
  });

  it("applies to the status subresource, ignoring everything but status", async () => {
    const res = await apply(
      `${DEPLOY}/ssa/status`,
      {
        apiVersion: "apps/v1",
        kind: "Deployment",
        metadata: { name: "ssa", labels: { ignored: "yes" } },
        status: { replicas: 2 },
      },
      "status-writer",
    );
    expect(res.status).toBe(200);
    expect(res.body.status).toEqual({ replicas: 2 });
    expect(res.body.metadata.labels).toBeUndefined();
    const entry = res.body.metadata.managedFields.find(
      (m: { manager: string }) => m.manager === "status-writer",
    );
    expect(entry).toMatchObject({
      operation: "Apply",
      subresource: "status",
      fieldsV1: { "f:status": { "f:replicas": {} } },
    });
  });

  it("merges keyed lists by key and keeps other managers' items", async () => {
    const cfg = (containers: { name: string; image: string }[]) => {
      const d = deployment("lists");
      (d.spec as { template: { spec: unknown } }).template.spec = { containers };
      return d;
    };
    await apply(`${DEPLOY}/lists`, cfg([{ name: "a", image: "a:1" }]), "first");
    const res = await api.patch(
      `${DEPLOY}/lists?fieldManager=second`,
      { spec: { template: { spec: { containers: [{ name: "b", image: "b:1" }] } } } },
      "application/strategic-merge-patch+json",
    );
    expect(res.body.spec.template.spec.containers.map((c: { name: string }) => c.name)).toEqual(["a", "b"]);
    const again = await apply(`${DEPLOY}/lists`, cfg([{ name: "a", image: "a:2" }]), "first");
    expect(again.body.spec.template.spec.containers.map((c: { image: string }) => c.image)).toEqual([
      "a:2",
      "b:1",
    ]);
  });
});
