import { beforeAll, describe, expect, it } from "vitest";
import { deployment, useFakeApiServer } from "./test-client.js";

// PATCH with JSON merge patch, JSON patch and strategic merge patch.

const { api } = useFakeApiServer();

const CM = "/api/v1/namespaces/default/configmaps";
const DEPLOY = "/apis/apps/v1/namespaces/default/deployments";
const MERGE = "application/merge-patch+json";
const JSON_PATCH = "application/json-patch+json";
const STRATEGIC = "application/strategic-merge-patch+json";

describe("JSON merge patch", () => {
  it("merges maps, deletes with null and replaces lists", async () => {
    await api.post(CM, { metadata: { name: "m", labels: { a: "1", b: "2" } }, data: { x: "1" } });
    const res = await api.patch(
      `${CM}/m`,
      { metadata: { labels: { b: null, c: "3" } }, data: { y: "2" } },
      MERGE,
    );
    expect(res.status).toBe(200);
    expect(res.body.metadata.labels).toEqual({ a: "1", c: "3" });
    expect(res.body.data).toEqual({ x: "1", y: "2" });
  });

  it("answers 404 for an absent object and 409 for a stale resourceVersion in the patch", async () => {
    expect((await api.patch(`${CM}/absent`, { data: {} }, MERGE)).status).toBe(404);
    const stale = await api.patch(`${CM}/m`, { metadata: { resourceVersion: "1" }, data: { z: "3" } }, MERGE);
    expect(stale.status).toBe(409);
    expect(stale.body.reason).toBe("Conflict");
  });

  it("answers 415 for an unknown patch content type", async () => {
    const res = await api.patch(`${CM}/m`, { data: {} }, "application/json");
    expect(res.status).toBe(415);
    expect(res.body.reason).toBe("UnsupportedMediaType");
  });
});

describe("JSON patch", () => {
  it("applies add, replace, remove, copy, move and test", async () => {
    const res = await api.patch(
      `${CM}/m`,
      [
        { op: "test", path: "/data/x", value: "1" },
        { op: "add", path: "/data/new", value: "n" },
        { op: "replace", path: "/data/x", value: "10" },
        { op: "copy", from: "/data/x", path: "/data/copied" },
        { op: "move", from: "/data/y", path: "/data/moved" },
        { op: "remove", path: "/metadata/labels/a" },
        { op: "add", path: "/metadata/annotations", value: { "example.com/ab": "x" } },
        { op: "replace", path: "/metadata/annotations/example.com~1ab", value: "y" },
      ],
      JSON_PATCH,
    );
    expect(res.status).toBe(200);
    expect(res.body.data).toEqual({ x: "10", new: "n", copied: "10", moved: "2" });
    expect(res.body.metadata.labels).toEqual({ c: "3" });
    expect(res.body.metadata.annotations).toEqual({ "example.com/ab": "y" });
  });

  it("answers 422 when a test fails or a path is missing, and 400 for a malformed patch", async () => {
    const failed = await api.patch(`${CM}/m`, [{ op: "test", path: "/data/x", value: "nope" }], JSON_PATCH);
    expect(failed.status).toBe(422);
    expect(failed.body.message).toBe("testing value /data/x failed: test failed");
    const missing = await api.patch(`${CM}/m`, [{ op: "remove", path: "/data/ghost" }], JSON_PATCH);
    expect(missing.status).toBe(422);
    expect((await api.patch(`${CM}/m`, { op: "add" }, JSON_PATCH)).status).toBe(400);
    expect((await api.patch(`${CM}/m`, [{ op: "jump", path: "/x" }], JSON_PATCH)).status).toBe(400);
  });

  it("answers 409 when the patch tests an old resourceVersion by setting it", async () => {
    const res = await api.patch(
      `${CM}/m`,
      [{ op: "replace", path: "/metadata/resourceVersion", value: "2" }],
      JSON_PATCH,
    );
    expect(res.status).toBe(409);
  });
});

describe("strategic merge patch", () => {
  beforeAll(async () => {
    const d = deployment("smp");
    const spec = (d.spec as { template: { spec: Record<string, unknown> } }).template.spec;
    spec.containers = [
      {
        name: "app",
        image: "app:1",
        env: [
          { name: "A", value: "1" },
          { name: "B", value: "2" },
        ],
        ports: [{ containerPort: 80 }],
        volumeMounts: [{ name: "data", mountPath: "/data" }],
      },
      { name: "sidecar", image: "side:1" },
    ];
    spec.volumes = [{ name: "data", emptyDir: {} }];
    spec.tolerations = [{ key: "a", operator: "Exists" }];
    await api.post(DEPLOY, d);
  });

  const podSpec = (body: { spec: { template: { spec: Record<string, unknown> } } }) =>
    body.spec.template.spec;
  const patchPodSpec = (spec: Record<string, unknown>) =>
    api.patch(`${DEPLOY}/smp`, { spec: { template: { spec } } }, STRATEGIC);

  it("merges containers by name and env by name, keeping the others", async () => {
    const res = await patchPodSpec({
      containers: [
        {
          name: "app",
          image: "app:2",
          env: [
            { name: "B", value: "20" },
            { name: "C", value: "3" },
          ],
        },
      ],
    });
    expect(res.status).toBe(200);
    const containers = podSpec(res.body).containers as { name: string; image: string; env?: unknown[] }[];
    expect(containers.map((c) => `${c.name}=${c.image}`)).toEqual(["app=app:2", "sidecar=side:1"]);
    expect(containers[0]!.env).toEqual([
      { name: "A", value: "1" },
      { name: "B", value: "20" },
      { name: "C", value: "3" },
    ]);
    expect(res.body.metadata.generation).toBe(2);
  });

  it("adds and deletes list items ($patch: delete) and replaces lists without a merge key", async () => {
    const res = await patchPodSpec({
      containers: [
        { name: "sidecar", $patch: "delete" },
        { name: "extra", image: "extra:1" },
      ],
      volumes: [{ name: "cache", emptyDir: {} }],
      tolerations: [{ key: "b", operator: "Exists" }],
    });
    expect(res.status).toBe(200);
    const spec = podSpec(res.body);
    expect((spec.containers as { name: string }[]).map((c) => c.name)).toEqual(["app", "extra"]);
    expect((spec.volumes as { name: string }[]).map((v) => v.name)).toEqual(["data", "cache"]);
    expect(spec.tolerations).toEqual([{ key: "b", operator: "Exists" }]);
  });

  it("supports $setElementOrder and $retainKeys as kubectl apply sends them", async () => {
    const res = await api.patch(
      `${DEPLOY}/smp`,
      {
        spec: {
          strategy: { $retainKeys: ["type"], type: "Recreate", rollingUpdate: null },
          template: {
            spec: {
              "$setElementOrder/containers": [{ name: "extra" }, { name: "app" }],
            },
          },
        },
      },
      STRATEGIC,
    );
    expect(res.status).toBe(200);
    expect(res.body.spec.strategy).toEqual({ type: "Recreate" });
    expect((podSpec(res.body).containers as { name: string }[]).map((c) => c.name)).toEqual(["extra", "app"]);
  });

  it("merges finalizers as a set and conditions by type", async () => {
    await api.post(CM, { metadata: { name: "fin", finalizers: ["a"] } });
    const res = await api.patch(`${CM}/fin`, { metadata: { finalizers: ["b"] } }, STRATEGIC);
    expect(res.body.metadata.finalizers).toEqual(["a", "b"]);
    await api.patch(
      `${CM}/fin`,
      { metadata: { "$deleteFromPrimitiveList/finalizers": ["a", "b"] } },
      STRATEGIC,
    );
    await api.patch(
      `${DEPLOY}/smp/status`,
      {
        status: {
          conditions: [
            { type: "Available", status: "True" },
            { type: "Progressing", status: "True" },
          ],
        },
      },
      STRATEGIC,
    );
    const res2 = await api.patch(
      `${DEPLOY}/smp/status`,
      { status: { conditions: [{ type: "Available", status: "False" }] } },
      STRATEGIC,
    );
    expect(res2.body.status.conditions).toEqual([
      { type: "Available", status: "False" },
      { type: "Progressing", status: "True" },
    ]);
  });

  it("refuses an unknown $patch directive", async () => {
    const res = await api.patch(`${DEPLOY}/smp`, { spec: { $patch: "explode" } }, STRATEGIC);
    expect(res.status).toBe(400);
  });
});
