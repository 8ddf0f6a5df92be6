import { describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { eventually, gadgetCrd, useFakeApiServer } from "./test-client.js";

// CustomResourceDefinitions: establishing, routes and discovery per served version, pruning,
// defaulting and validation by the schema engine, status and scale subresources, Table view, and
// deleting a CRD with its objects.

const { api } = useFakeApiServer();

const CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
const GADGETS = "/apis/example.com/v1/namespaces/default/gadgets";

const gadget = (name: string, spec: Record<string, unknown> = { size: "small" }) => ({
  apiVersion: "example.com/v1",
  kind: "Gadget",
  metadata: { name },
  spec,
});

describe("CustomResourceDefinitions", () => {
  it("refuses an invalid CRD with the engine's causes", async () => {
    const crd = gadgetCrd();
    (crd.metadata as Record<string, unknown>).name = "wrong.example.com";
    const res = await api.post(CRDS, crd);
    expect(res.status).toBe(422);
    expect(res.body.message).toContain(
      'CustomResourceDefinition.apiextensions.k8s.io "wrong.example.com" is invalid',
    );
    expect(res.body.details.causes.map((c: { field: string }) => c.field)).toContain("metadata.name");
  });

  it("establishes a CRD: conditions, accepted names, stored versions and the cleanup finalizer", async () => {
    const res = await api.post(CRDS, gadgetCrd());
    expect(res.status).toBe(201);
    expect(res.body.metadata.finalizers).toEqual(["customresourcecleanup.apiextensions.k8s.io"]);
    const conditions = Object.fromEntries(
      res.body.status.conditions.map((c: { type: string; status: string }) => [c.type, c.status]),
    );
    expect(conditions).toEqual({ NamesAccepted: "True", Established: "True" });
    expect(res.body.status.acceptedNames).toMatchObject({
      plural: "gadgets",
      kind: "Gadget",
      listKind: "GadgetList",
    });
    expect(res.body.status.storedVersions).toEqual(["v1"]);
  });

  it("serves every served version in discovery", async () => {
    const group = await api.get("/apis/example.com");
    expect(group.body).toMatchObject({
      kind: "APIGroup",
      name: "example.com",
      preferredVersion: { groupVersion: "example.com/v1", version: "v1" },
    });
    expect(group.body.versions.map((v: { version: string }) => v.version)).toEqual(["v1", "v1beta1"]);
    const resources = await api.get("/apis/example.com/v1beta1");
    expect(resources.body.resources.map((r: { name: string }) => r.name)).toEqual([
      "gadgets",
      "gadgets/status",
      "gadgets/scale",
    ]);
    expect(resources.body.resources[0]).toMatchObject({
      singularName: "gadget",
      shortNames: ["gd"],
      categories: ["all"],
      namespaced: true,
    });
    const all = await api.get("/apis");
    expect(all.body.groups.map((g: { name: string }) => g.name)).toContain("example.com");
  });

  it("prunes unknown fields, applies defaults and validates (schema and CEL)", async () => {
    const res = await api.post(GADGETS, {
      ...gadget("g1"),
      spec: { size: "small", unknown: 1 },
      extra: true,
    });
    expect(res.status).toBe(201);
    expect(res.body.spec).toEqual({ size: "small", replicas: 1, color: "blue" });
    expect(res.body.extra).toBeUndefined();
    expect(res.headers.get("warning")).toContain('unknown field \\"spec.unknown\\"');

    const strict = await api.post(`${GADGETS}?fieldValidation=Strict`, {
      ...gadget("g2"),
      spec: { size: "small", unknown: 1 },
    });
    expect(strict.status).toBe(400);
    expect(strict.body.message).toContain('strict decoding error: unknown field "spec.unknown"');

    const invalid = await api.post(GADGETS, gadget("g3", { size: "huge", replicas: 11 }));
    expect(invalid.status).toBe(422);
    expect(invalid.body.message).toMatch(/^Gadget\.example\.com "g3" is invalid: /);
    expect(invalid.body.details).toMatchObject({ group: "example.com", kind: "Gadget", name: "g3" });
    const fields = invalid.body.details.causes.map((c: { field: string }) => c.field);
    expect(fields).toContain("spec.size");
  });

  it("serves the same objects at every version, with that apiVersion", async () => {
    const res = await api.get("/apis/example.com/v1beta1/namespaces/default/gadgets/g1");
    expect(res.status).toBe(200);
    expect(res.body.apiVersion).toBe("example.com/v1beta1");
    expect(res.body.spec.size).toBe("small");
  });

  it("has status subresource semantics: status dropped on create, ignored by the main endpoint", async () => {
    const created = await api.post(GADGETS, { ...gadget("s1"), status: { phase: "Ready" } });
    expect(created.body.status).toBeUndefined();
    const status = await api.patch(
      `${GADGETS}/s1/status`,
      { status: { phase: "Ready", replicas: 1 } },
      "application/merge-patch+json",
    );
    expect(status.status).toBe(200);
    expect(status.body.status).toEqual({ phase: "Ready", replicas: 1 });
    expect(status.body.metadata.generation).toBe(1);
    const main = await api.patch(
      `${GADGETS}/s1`,
      { spec: { color: "red" }, status: { phase: "Lost" } },
      "application/merge-patch+json",
    );
    expect(main.body.status.phase).toBe("Ready");
    expect(main.body.metadata.generation).toBe(2);
  });

  it("has a scale subresource", async () => {
    await api.patch(
      `${GADGETS}/s1/status`,
      { status: { replicas: 1, selector: "app=gadget" } },
      "application/merge-patch+json",
    );
    const scale = await api.get(`${GADGETS}/s1/scale`);
    expect(scale.body).toMatchObject({
      kind: "Scale",
      apiVersion: "autoscaling/v1",
      metadata: { name: "s1", namespace: "default" },
      spec: { replicas: 1 },
      status: { replicas: 1, selector: "app=gadget" },
    });
    const scaled = await api.patch(
      `${GADGETS}/s1/scale`,
      { spec: { replicas: 3 } },
      "application/merge-patch+json",
    );
    expect(scaled.body.spec.replicas).toBe(3);
    expect((await api.get(`${GADGETS}/s1`)).body.spec.replicas).toBe(3);
    const tooMany = await api.patch(
      `${GADGETS}/s1/scale`,
      { spec: { replicas: 11 } },
      "application/merge-patch+json",
    );
    expect(tooMany.status).toBe(422);
  });

  it("refuses strategic merge patches (415) and takes merge, JSON and apply patches", async () => {
    const smp = await api.patch(
      `${GADGETS}/s1`,
      { spec: { color: "x" } },
      "application/strategic-merge-patch+json",
    );
    expect(smp.status).toBe(415);
    expect(smp.body.message).toBe(
      "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
    );
    const applied = await api.patch(
      `${GADGETS}/a1?fieldManager=op`,
      stringify({ ...gadget("a1", { size: "large", parts: [{ name: "x", count: 1 }] }) }),
      "application/apply-patch+yaml",
    );
    expect(applied.status).toBe(201);
    const other = await api.patch(
      `${GADGETS}/a1?fieldManager=other`,
      stringify({ ...gadget("a1", { size: "large", parts: [{ name: "y", count: 2 }] }) }),
      "application/apply-patch+yaml",
    );
    // parts is a keyed list (x-kubernetes-list-type: map): both managers' items are kept.
    expect(other.body.spec.parts).toEqual([
      { name: "x", count: 1 },
      { name: "y", count: 2 },
    ]);
  });

  it("answers the Table view with the printer columns", async () => {
    const table = await api.get(GADGETS, {
      accept: "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
    });
    expect(table.body.kind).toBe("Table");
    expect(table.body.apiVersion).toBe("meta.k8s.io/v1");
    expect(table.body.columnDefinitions.map((c: { name: string }) => c.name)).toEqual([
      "Name",
      "Size",
      "Replicas",
      "Phase",
    ]);
    const row = table.body.rows.find((r: { cells: unknown[] }) => r.cells[0] === "s1");
    expect(row.cells).toEqual(["s1", "small", 3, "Ready"]);
    expect(row.object).toMatchObject({
      kind: "PartialObjectMetadata",
      apiVersion: "meta.k8s.io/v1",
      metadata: { name: "s1" },
    });
    const withObject = await api.get(`${GADGETS}/s1?includeObject=Object`, {
      accept: "application/json;as=Table;v=v1;g=meta.k8s.io",
    });
    expect(withObject.body.rows[0].object.spec.size).toBe("small");
  });

  it("shows NAME and AGE for a CRD without printer columns, as the real server does", async () => {
    const crd = structuredClone(gadgetCrd()) as { metadata: { name: string }; spec: Record<string, unknown> };
    crd.metadata.name = "plains.example.com";
    crd.spec.names = { plural: "plains", singular: "plain", kind: "Plain" };
    crd.spec.versions = (crd.spec.versions as Record<string, unknown>[]).map((v) => ({
      ...v,
      additionalPrinterColumns: undefined,
    }));
    expect((await api.post(CRDS, crd)).status).toBe(201);
    await api.post("/apis/example.com/v1/namespaces/default/plains", { ...gadget("p1"), kind: "Plain" });
    const table = await api.get("/apis/example.com/v1/namespaces/default/plains", {
      accept: "application/json;as=Table;v=v1;g=meta.k8s.io",
    });
    expect(table.body.columnDefinitions.map((c: { name: string }) => c.name)).toEqual(["Name", "Age"]);
    expect(table.body.rows[0].cells[0]).toBe("p1");
    expect(table.body.rows[0].cells[1]).toMatch(/^\d+s$/);
  });

  it("deleting the CRD deletes its objects first, then stops serving it", async () => {
    await api.post(GADGETS, {
      ...gadget("held"),
      metadata: { name: "held", finalizers: ["example.com/hold"] },
    });
    const res = await api.delete(`${CRDS}/gadgets.example.com`);
    expect(res.status).toBe(200);
    expect(res.body.metadata.deletionTimestamp).toBeDefined();
    const refused = await api.post(GADGETS, gadget("late"));
    expect(refused.status).toBe(405);
    await eventually(async () =>
      (await api.get(`${GADGETS}/held`)).body.metadata.deletionTimestamp ? true : undefined,
    );
    expect((await api.get(`${CRDS}/gadgets.example.com`)).status).toBe(200);
    await api.patch(`${GADGETS}/held`, { metadata: { finalizers: null } }, "application/merge-patch+json");
    await eventually(async () =>
      (await api.get(`${CRDS}/gadgets.example.com`)).status === 404 ? true : undefined,
    );
    expect((await api.get(GADGETS)).status).toBe(404);
    const discovery = await api.get("/apis/example.com/v1");
    expect(discovery.body.resources.map((r: { name: string }) => r.name)).toEqual([
      "plains",
      "plains/status",
      "plains/scale",
    ]);
  });
});
