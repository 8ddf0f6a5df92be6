import http from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEPLOYMENTS, ENDPOINTS, PODS, REPLICASETS, SERVICES } from "./client.js";
import { serverContainer, startTestCluster, type TestCluster, waitFor } from "./test-support.js";
import type { Deployment, Endpoints, Pod, ReplicaSet } from "./types.js";
import { controllerRef, isPodReady } from "./util.js";

function get(host: string, port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host, port, path, agent: false }, (res) => {
        let body = "";
        res.setEncoding("utf8").on("data", (c) => {
          body += c;
        });
        res.on("end", () => resolve(body));
      })
      .on("error", reject);
  });
}

describe("Deployments, ReplicaSets, Endpoints and Services", () => {
  let t: TestCluster;
  beforeAll(async () => {
    t = await startTestCluster();
  });
  afterAll(async () => {
    await t?.close();
  });

  const deployment = (version: string): Deployment => ({
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: "web", namespace: t.namespace },
    spec: {
      replicas: 2,
      selector: { matchLabels: { app: "web" } },
      strategy: { type: "RollingUpdate", rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
      template: {
        metadata: { labels: { app: "web" } },
        spec: {
          terminationGracePeriodSeconds: 5,
          containers: [serverContainer([{ name: "VERSION", value: version }])],
        },
      },
    },
  });

  it("brings a Deployment of 2 up ready, with distinct pod IPs, Endpoints and a balanced Service", async () => {
    const ns = t.namespace;
    const pods = await t.watch<Pod>(PODS);
    const endpoints = await t.watch<Endpoints>(ENDPOINTS);
    const deployments = await t.watch<Deployment>(DEPLOYMENTS);
    await t.client.create(SERVICES, ns, {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "web", namespace: ns },
      spec: { selector: { app: "web" }, ports: [{ name: "http", port: 80, targetPort: "http" }] },
    } as never);
    await t.client.create(DEPLOYMENTS, ns, deployment("v1"));

    const d = await waitFor("the Deployment to be available", () => {
      const d = deployments.get(ns, "web");
      return d?.status?.availableReplicas === 2 && d.status.observedGeneration === d.metadata.generation && d;
    });
    expect(d.status).toMatchObject({
      replicas: 2,
      updatedReplicas: 2,
      readyReplicas: 2,
      availableReplicas: 2,
    });
    expect(d.status?.unavailableReplicas).toBeUndefined();
    const conditions = Object.fromEntries((d.status?.conditions ?? []).map((c) => [c.type, c]));
    expect(conditions.Available).toMatchObject({ status: "True", reason: "MinimumReplicasAvailable" });
    expect(conditions.Progressing).toMatchObject({ status: "True", reason: "NewReplicaSetAvailable" });
    expect(d.metadata.annotations?.["deployment.kubernetes.io/revision"]).toBe("1");

    const running = pods.list(ns).filter((p) => p.metadata.labels?.app === "web");
    expect(running).toHaveLength(2);
    const rsName = controllerRef(running[0] as Pod)?.name ?? "";
    expect(rsName).toMatch(/^web-[bcdfghjklmnpqrstvwxz2456789]+$/);
    for (const p of running) {
      expect(p.metadata.name).toMatch(new RegExp(`^${rsName}-[bcdfghjklmnpqrstvwxz2456789]{5}$`));
      expect(p.spec.nodeName).toBe("fake-node");
      expect(p.status?.phase).toBe("Running");
      expect(p.status?.podIP).toMatch(/^127\.0\.0\.\d+$/);
      expect(p.status?.containerStatuses?.[0]).toMatchObject({ ready: true, started: true, restartCount: 0 });
      expect(p.status?.containerStatuses?.[0]?.state.running).toBeDefined();
    }
    const ips = running.map((p) => p.status?.podIP ?? "");
    expect(new Set(ips).size).toBe(2);

    const ep = await waitFor("Endpoints with both pods", () => {
      const ep = endpoints.get(ns, "web");
      return ep?.subsets?.[0]?.addresses?.length === 2 && ep;
    });
    expect(ep.subsets?.[0]?.ports).toEqual([{ name: "http", port: 8080, protocol: "TCP" }]);
    expect(ep.subsets?.[0]?.addresses?.map((a) => a.ip).sort()).toEqual([...ips].sort());
    expect(ep.subsets?.[0]?.notReadyAddresses).toBeUndefined();

    const address = await t.cluster.serviceAddress(ns, "web", "http");
    expect(address.host).toBe("127.0.0.1");
    const answers = new Set<string>();
    for (let i = 0; i < 4; i++) answers.add(await get(address.host, address.port, "/whoami"));
    expect([...answers].map((a) => a.split(" ")[0]).sort()).toEqual(
      running.map((p) => p.metadata.name).sort(),
    );
    expect(t.cluster.podLog(ns, running[0]?.metadata.name ?? "")).toContain(`listening on ${ips[0]}:8080`);
  });

  it("rolls out a new template with maxSurge 1 / maxUnavailable 0 without dropping below 2 ready", async () => {
    const ns = t.namespace;
    const pods = await t.watch<Pod>(PODS);
    const replicaSets = await t.watch<ReplicaSet>(REPLICASETS);
    const deployments = await t.watch<Deployment>(DEPLOYMENTS);
    const ready = () => pods.list(ns).filter((p) => p.metadata.labels?.app === "web" && isPodReady(p)).length;
    let minReady = ready();
    let maxPods = 0;
    const seen = () => {
      minReady = Math.min(minReady, ready());
      const live = pods
        .list(ns)
        .filter((p) => p.metadata.labels?.app === "web" && !p.metadata.deletionTimestamp);
      maxPods = Math.max(maxPods, live.length);
    };
    pods.onEvent(seen);
    replicaSets.onEvent(seen);

    const current = await t.client.get<Deployment>(DEPLOYMENTS, ns, "web");
    current.spec.template = deployment("v2").spec.template;
    const generation = (await t.client.update(DEPLOYMENTS, current)).metadata.generation ?? 0;

    const done = await waitFor(
      "the rollout to complete",
      () => {
        const d = deployments.get(ns, "web");
        const progressing = d?.status?.conditions?.find((c) => c.type === "Progressing");
        return (
          (d?.status?.observedGeneration ?? 0) >= generation &&
          d?.status?.updatedReplicas === 2 &&
          d?.status?.availableReplicas === 2 &&
          d?.status?.replicas === 2 &&
          progressing?.reason === "NewReplicaSetAvailable" &&
          d
        );
      },
      40_000,
    );
    expect(done.metadata.annotations?.["deployment.kubernetes.io/revision"]).toBe("2");
    const owned = replicaSets.list(ns).filter((rs) => controllerRef(rs)?.uid === done.metadata.uid);
    expect(owned).toHaveLength(2);
    const [oldRS, newRS] = [...owned].sort((a, b) =>
      Number(a.metadata.annotations?.["deployment.kubernetes.io/revision"]) >
      Number(b.metadata.annotations?.["deployment.kubernetes.io/revision"])
        ? 1
        : -1,
    );
    expect(oldRS?.spec.replicas).toBe(0);
    expect(newRS?.spec.replicas).toBe(2);
    expect(newRS?.status).toMatchObject({ replicas: 2, readyReplicas: 2, availableReplicas: 2 });
    expect(newRS?.spec.selector.matchLabels?.["pod-template-hash"]).toBe(
      newRS?.metadata.labels?.["pod-template-hash"],
    );
    expect(minReady).toBeGreaterThanOrEqual(2);
    expect(maxPods).toBeLessThanOrEqual(3);

    const address = await t.cluster.serviceAddress(ns, "web", 80);
    await waitFor("the Service to answer from v2 pods only", async () => {
      const answers = await Promise.all([0, 1, 2, 3].map(() => get(address.host, address.port, "/whoami")));
      return answers.every((a) => a.endsWith(" v2"));
    });
  });

  it("garbage-collects ReplicaSets and pods when the Deployment is deleted", async () => {
    const ns = t.namespace;
    const pods = await t.watch<Pod>(PODS);
    const replicaSets = await t.watch<ReplicaSet>(REPLICASETS);
    const endpoints = await t.watch<Endpoints>(ENDPOINTS);
    expect(pods.list(ns).length).toBeGreaterThan(0);
    await t.client.delete(DEPLOYMENTS, ns, "web");
    await waitFor(
      "the pods and ReplicaSets to be gone",
      () => pods.list(ns).length === 0 && replicaSets.list(ns).length === 0,
    );
    await waitFor("the Endpoints to be empty", () => (endpoints.get(ns, "web")?.subsets ?? []).length === 0);
  });
});
