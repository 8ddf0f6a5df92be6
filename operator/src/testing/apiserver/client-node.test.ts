import {
  ApiException,
  AppsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  makeInformer,
  PatchStrategy,
  setHeaderOptions,
  type V1ConfigMap,
  type V1Deployment,
} from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type FakeApiServer, startFakeApiServer } from "./index.js";
import { deployment, eventually, gadgetCrd, testClient } from "./test-client.js";

// The real @kubernetes/client-node as a client of the fake server: typed CRUD, patches, custom
// objects, errors, and an informer that relists after its watch expires.

let server: FakeApiServer;
let kc: KubeConfig;
beforeAll(async () => {
  server = await startFakeApiServer({ bookmarkIntervalMs: 100 });
  kc = new KubeConfig();
  kc.loadFromString(server.kubeconfig(server.adminToken));
});
afterAll(() => server?.close());

describe("@kubernetes/client-node", () => {
  it("creates, reads, replaces, patches and deletes a Deployment", async () => {
    const apps = kc.makeApiClient(AppsV1Api);
    const created = await apps.createNamespacedDeployment({
      namespace: "default",
      body: deployment("cn") as V1Deployment,
    });
    expect(created.metadata?.uid).toBeDefined();
    expect(created.spec?.replicas).toBe(1);
    const read = await apps.readNamespacedDeployment({ name: "cn", namespace: "default" });
    read.spec!.replicas = 2;
    const replaced = await apps.replaceNamespacedDeployment({ name: "cn", namespace: "default", body: read });
    expect(replaced.metadata?.generation).toBe(2);
    const patched = await apps.patchNamespacedDeployment(
      { name: "cn", namespace: "default", body: { metadata: { labels: { patched: "yes" } } } },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );
    expect(patched.metadata?.labels).toEqual({ patched: "yes" });
    const applied = await apps.patchNamespacedDeployment(
      {
        name: "cn",
        namespace: "default",
        body: { ...deployment("cn"), spec: { ...(deployment("cn").spec as object), replicas: 3 } },
        fieldManager: "cn-test",
        force: true,
      },
      setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply),
    );
    expect(applied.spec?.replicas).toBe(3);
    const list = await apps.listNamespacedDeployment({ namespace: "default", labelSelector: "patched=yes" });
    expect(list.items.map((d) => d.metadata?.name)).toEqual(["cn"]);
    await apps.deleteNamespacedDeployment({ name: "cn", namespace: "default" });
    await expect(apps.readNamespacedDeployment({ name: "cn", namespace: "default" })).rejects.toMatchObject({
      code: 404,
    });
  });

  it("surfaces the server's Status on errors", async () => {
    const core = kc.makeApiClient(CoreV1Api);
    await core.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "dup" } } });
    const error = await core
      .createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "dup" } } })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiException);
    const status = JSON.parse((error as ApiException<string>).body);
    expect(status).toMatchObject({ reason: "AlreadyExists", code: 409 });
  });

  it("creates and reads custom objects", async () => {
    await testClient(server).post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", gadgetCrd());
    const custom = kc.makeApiClient(CustomObjectsApi);
    const created = (await custom.createNamespacedCustomObject({
      group: "example.com",
      version: "v1",
      namespace: "default",
      plural: "gadgets",
      body: {
        apiVersion: "example.com/v1",
        kind: "Gadget",
        metadata: { name: "g" },
        spec: { size: "large" },
      },
    })) as { spec: Record<string, unknown> };
    expect(created.spec).toEqual({ size: "large", replicas: 1, color: "blue" });
    const status = (await custom.patchNamespacedCustomObjectStatus(
      {
        group: "example.com",
        version: "v1",
        namespace: "default",
        plural: "gadgets",
        name: "g",
        body: { status: { phase: "Ready" } },
      },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    )) as { status: Record<string, unknown> };
    expect(status.status).toEqual({ phase: "Ready" });
  });

  it("runs an informer: ADDED/MODIFIED/DELETED, and a relist after the history is compacted", async () => {
    const core = kc.makeApiClient(CoreV1Api);
    const seen: string[] = [];
    const informer = makeInformer<V1ConfigMap>(
      kc,
      "/api/v1/namespaces/default/configmaps",
      () => core.listNamespacedConfigMap({ namespace: "default", labelSelector: "informed=yes" }),
      "informed=yes",
    );
    informer.on("add", (o) => seen.push(`add ${o.metadata?.name}`));
    informer.on("update", (o) => seen.push(`update ${o.metadata?.name} ${o.data?.v}`));
    informer.on("delete", (o) => seen.push(`delete ${o.metadata?.name}`));
    await informer.start();
    try {
      const body = (name: string, v: string) => ({
        metadata: { name, labels: { informed: "yes" } },
        data: { v },
      });
      await core.createNamespacedConfigMap({ namespace: "default", body: body("i1", "1") });
      await eventually(() => (seen.includes("add i1") ? true : undefined));
      await core.replaceNamespacedConfigMap({ name: "i1", namespace: "default", body: body("i1", "2") });
      await eventually(() => (seen.includes("update i1 2") ? true : undefined));
      await core.deleteNamespacedConfigMap({ name: "i1", namespace: "default" });
      await eventually(() => (seen.includes("delete i1") ? true : undefined));

      // The informer has seen i2; writes it does not select move the resourceVersion on, then the
      // history goes: its re-watch from i2's resourceVersion gets 410 Expired and it relists.
      await core.createNamespacedConfigMap({ namespace: "default", body: body("i2", "1") });
      await eventually(() => (seen.includes("add i2") ? true : undefined));
      await core.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "noise" } } });
      const listsBefore = server.audit.filter((e) => e.verb === "list" && e.resource === "configmaps").length;
      server.compactHistory();
      server.closeWatches();
      await eventually(() =>
        server.audit.filter((e) => e.verb === "list" && e.resource === "configmaps").length > listsBefore
          ? true
          : undefined,
      );
      expect(informer.list("default").map((o) => o.metadata?.name)).toEqual(["i2"]);
    } finally {
      await informer.stop();
    }
  });
});
