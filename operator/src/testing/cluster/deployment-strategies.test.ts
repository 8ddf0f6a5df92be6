import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEPLOYMENTS, PODS, REPLICASETS } from "./client.js";
import { serverContainer, startTestCluster, type TestCluster, waitFor } from "./test-support.js";
import type { Deployment, Pod, ReplicaSet } from "./types.js";
import { controllerRef } from "./util.js";

describe("Deployment strategies, scaling, history and deadlines", () => {
  let t: TestCluster;
  beforeAll(async () => {
    t = await startTestCluster();
  });
  afterAll(async () => {
    await t?.close();
  });

  const deployment = (name: string, version: string, spec: Partial<Deployment["spec"]> = {}): Deployment => ({
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name, namespace: t.namespace },
    spec: {
      replicas: 2,
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name } },
        spec: { containers: [serverContainer([{ name: "VERSION", value: version }])] },
      },
      ...spec,
    },
  });

  const settled = (
    deployments: { get(ns: string, n: string): Deployment | undefined },
    name: string,
    replicas: number,
    generation = 1,
  ) =>
    waitFor(
      `${name} to settle at ${replicas}`,
      () => {
        const d = deployments.get(t.namespace, name);
        const s = d?.status;
        return (
          (s?.observedGeneration ?? 0) >= generation &&
          (s?.updatedReplicas ?? 0) === replicas &&
          (s?.availableReplicas ?? 0) === replicas &&
          (s?.replicas ?? 0) === replicas &&
          d
        );
      },
      30_000,
    );

  it("Recreate: the old pods are gone before a new one starts; scaling up and down", async () => {
    const ns = t.namespace;
    const pods = await t.watch<Pod>(PODS);
    const deployments = await t.watch<Deployment>(DEPLOYMENTS);
    await t.client.create(DEPLOYMENTS, ns, deployment("re", "v1", { strategy: { type: "Recreate" } }));
    await settled(deployments, "re", 2);
    let overlap = false;
    pods.onEvent(() => {
      const versions = new Set(
        pods
          .list(ns)
          .filter((p) => p.metadata.labels?.app === "re")
          .map((p) => p.metadata.labels?.["pod-template-hash"]),
      );
      if (versions.size > 1) overlap = true;
    });
    const current = await t.client.get<Deployment>(DEPLOYMENTS, ns, "re");
    current.spec.template = deployment("re", "v2").spec.template;
    const updated = await t.client.update(DEPLOYMENTS, current);
    await settled(deployments, "re", 2, updated.metadata.generation);
    expect(overlap).toBe(false);

    for (const replicas of [3, 1]) {
      const d = await t.client.get<Deployment>(DEPLOYMENTS, ns, "re");
      d.spec.replicas = replicas;
      const updated = await t.client.update(DEPLOYMENTS, d);
      await settled(deployments, "re", replicas, updated.metadata.generation);
      await waitFor(
        `${replicas} pods`,
        () => pods.list(ns).filter((p) => p.metadata.labels?.app === "re").length === replicas,
      );
    }
  });

  it("heals after closed watches, compacted history and failing writes", async () => {
    const ns = t.namespace;
    const deployments = await t.watch<Deployment>(DEPLOYMENTS);
    const pods = await t.watch<Pod>(PODS);
    await t.client.create(DEPLOYMENTS, ns, deployment("heal", "v1", { replicas: 1 }));
    await settled(deployments, "heal", 1);
    t.apiServer.compactHistory();
    t.apiServer.closeWatches();
    t.apiServer.injectFault({ verb: "update", resource: "replicasets", code: 500, times: 2 });
    t.apiServer.injectFault({ verb: "create", resource: "pods", code: 500, times: 1 });
    t.apiServer.injectFault({ verb: "patch", resource: "pods/status", code: 500, times: 1 });
    const d = await t.client.get<Deployment>(DEPLOYMENTS, ns, "heal");
    d.spec.replicas = 3;
    const updated = await t.client.update(DEPLOYMENTS, d);
    await settled(deployments, "heal", 3, updated.metadata.generation);
    expect(pods.list(ns).filter((p) => p.metadata.labels?.app === "heal")).toHaveLength(3);
  });

  it("keeps revisionHistoryLimit old ReplicaSets", async () => {
    const ns = t.namespace;
    const replicaSets = await t.watch<ReplicaSet>(REPLICASETS);
    const deployments = await t.watch<Deployment>(DEPLOYMENTS);
    await t.client.create(
      DEPLOYMENTS,
      ns,
      deployment("hist", "v1", {
        replicas: 1,
        revisionHistoryLimit: 1,
        strategy: { type: "RollingUpdate", rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
      }),
    );
    await settled(deployments, "hist", 1);
    for (const version of ["v2", "v3"]) {
      const d = await t.client.get<Deployment>(DEPLOYMENTS, ns, "hist");
      d.spec.template = deployment("hist", version).spec.template;
      const updated = await t.client.update(DEPLOYMENTS, d);
      await settled(deployments, "hist", 1, updated.metadata.generation);
    }
    const uid = deployments.get(ns, "hist")?.metadata.uid;
    const owned = await waitFor("the oldest ReplicaSet to be deleted", () => {
      const owned = replicaSets.list(ns).filter((rs) => controllerRef(rs)?.uid === uid);
      return owned.length === 2 && owned;
    });
    const revisions = owned
      .map((rs) => rs.metadata.annotations?.["deployment.kubernetes.io/revision"])
      .sort();
    expect(revisions).toEqual(["2", "3"]);
  });

  it("reports ProgressDeadlineExceeded when a rollout makes no progress", async () => {
    const ns = t.namespace;
    const deployments = await t.watch<Deployment>(DEPLOYMENTS);
    const stuck = deployment("stuck", "v1", { replicas: 1, progressDeadlineSeconds: 2 });
    const container = stuck.spec.template.spec.containers[0];
    if (container) container.image = "example.com/missing:1";
    await t.client.create(DEPLOYMENTS, ns, stuck);
    const d = await waitFor(
      "ProgressDeadlineExceeded",
      () => {
        const d = deployments.get(ns, "stuck");
        const c = d?.status?.conditions?.find((c) => c.type === "Progressing");
        return c?.reason === "ProgressDeadlineExceeded" && d;
      },
      15_000,
    );
    expect(d.status?.conditions?.find((c) => c.type === "Progressing")).toMatchObject({
      status: "False",
      message: expect.stringMatching(/^ReplicaSet "stuck-\w+" has timed out progressing\.$/),
    });
    expect(d.status?.conditions?.find((c) => c.type === "Available")).toMatchObject({
      status: "False",
      reason: "MinimumReplicasUnavailable",
    });
    expect(d.status?.unavailableReplicas).toBe(1);
  });
});
