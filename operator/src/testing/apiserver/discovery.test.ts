import { describe, expect, it } from "vitest";
import { deployment, useFakeApiServer } from "./test-client.js";

// Legacy discovery (also when aggregated discovery is asked for), /version, the Table view of
// built-ins and the deployments' scale subresource.

const { api } = useFakeApiServer();

const AGGREGATED =
  "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

describe("discovery", () => {
  it("answers /version", async () => {
    const res = await api.get("/version");
    expect(res.body).toMatchObject({ major: "1", minor: "35", gitVersion: "v1.35.0" });
  });

  it("answers /api and /api/v1 with the core resources and their subresources", async () => {
    expect((await api.get("/api")).body).toMatchObject({ kind: "APIVersions", versions: ["v1"] });
    const res = await api.get("/api/v1");
    expect(res.body).toMatchObject({ kind: "APIResourceList", groupVersion: "v1" });
    const names = res.body.resources.map((r: { name: string }) => r.name);
    expect(names).toEqual(
      expect.arrayContaining([
        "namespaces",
        "pods",
        "pods/status",
        "pods/binding",
        "services",
        "services/status",
        "endpoints",
        "secrets",
        "configmaps",
        "events",
        "serviceaccounts",
      ]),
    );
    const pods = res.body.resources.find((r: { name: string }) => r.name === "pods");
    expect(pods).toEqual({
      name: "pods",
      singularName: "pod",
      namespaced: true,
      kind: "Pod",
      verbs: ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
      shortNames: ["po"],
      categories: ["all"],
    });
  });

  it("answers the legacy forms as plain JSON when aggregated discovery is asked for", async () => {
    const res = await api.get("/apis", { accept: AGGREGATED });
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(res.body.kind).toBe("APIGroupList");
    const groups = res.body.groups.map((g: { name: string }) => g.name);
    expect(groups).toEqual(
      expect.arrayContaining([
        "apps",
        "batch",
        "policy",
        "coordination.k8s.io",
        "events.k8s.io",
        "rbac.authorization.k8s.io",
        "networking.k8s.io",
        "apiextensions.k8s.io",
      ]),
    );
    const apps = await api.get("/apis/apps/v1", { accept: AGGREGATED });
    const scale = apps.body.resources.find((r: { name: string }) => r.name === "deployments/scale");
    expect(scale).toMatchObject({
      group: "autoscaling",
      version: "v1",
      kind: "Scale",
      verbs: ["get", "patch", "update"],
    });
  });

  it("answers 404 for OpenAPI and unknown groups", async () => {
    expect((await api.get("/openapi/v2")).status).toBe(404);
    expect((await api.get("/openapi/v3")).status).toBe(404);
    expect((await api.get("/apis/unknown.io/v1")).status).toBe(404);
    expect((await api.get("/healthz")).body).toBe("ok");
  });
});

describe("Table view of built-ins", () => {
  it("has Name and Age at least, and kubectl's columns for deployments", async () => {
    await api.post("/apis/apps/v1/namespaces/default/deployments", deployment("tbl"));
    const accept = {
      accept:
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
    };
    const res = await api.get("/apis/apps/v1/namespaces/default/deployments", accept);
    expect(res.body.columnDefinitions.map((c: { name: string }) => c.name)).toEqual([
      "Name",
      "Ready",
      "Up-to-date",
      "Available",
      "Age",
    ]);
    expect(res.body.rows[0].cells.slice(0, 4)).toEqual(["tbl", "0/1", 0, 0]);
    expect(res.body.rows[0].cells[4]).toMatch(/^\d+s$/);
    const cms = await api.get("/api/v1/namespaces/default/serviceaccounts", accept);
    expect(cms.body.columnDefinitions.map((c: { name: string }) => c.name)).toEqual(["Name", "Age"]);
  });
});

describe("scale subresource of deployments", () => {
  it("reads and writes spec.replicas through autoscaling/v1 Scale", async () => {
    const scale = await api.get("/apis/apps/v1/namespaces/default/deployments/tbl/scale");
    expect(scale.body).toMatchObject({
      kind: "Scale",
      apiVersion: "autoscaling/v1",
      spec: { replicas: 1 },
      status: { replicas: 0, selector: "app=tbl" },
    });
    const put = await api.put("/apis/apps/v1/namespaces/default/deployments/tbl/scale", {
      ...scale.body,
      spec: { replicas: 4 },
    });
    expect(put.status).toBe(200);
    expect(put.body.spec.replicas).toBe(4);
    const stale = await api.put("/apis/apps/v1/namespaces/default/deployments/tbl/scale", scale.body);
    expect(stale.status).toBe(409);
    const d = await api.get("/apis/apps/v1/namespaces/default/deployments/tbl");
    expect(d.body.spec.replicas).toBe(4);
    expect(d.body.metadata.generation).toBe(2);
  });
});
