import { describe, expect, it } from "vitest";
import { expand, rewriteMountPaths } from "./container-env.js";
import {
  computeHash,
  equalIgnoreHash,
  maxUnavailable,
  newRSNewReplicas,
  proportion,
  resolveFenceposts,
} from "./deployment-util.js";
import { computeSubsets, resolvePort } from "./endpoints-controller.js";
import { serviceBackends } from "./service-proxy.js";
import type { Deployment, Pod, ReplicaSet, Service } from "./types.js";
import { availableAt, compareForDeletion, isPodAvailable, scaledValue, selectorMatches } from "./util.js";

const deployment = (
  replicas: number,
  maxSurge?: number | string,
  maxUnavailable?: number | string,
): Deployment => ({
  metadata: { name: "d", namespace: "ns", generation: 1 },
  spec: {
    replicas,
    selector: { matchLabels: { app: "a" } },
    template: { metadata: { labels: { app: "a" } }, spec: { containers: [{ name: "c", image: "i" }] } },
    strategy: { type: "RollingUpdate", rollingUpdate: { maxSurge, maxUnavailable } },
  },
});

const rs = (name: string, replicas: number, extra: Partial<ReplicaSet["metadata"]> = {}): ReplicaSet => ({
  metadata: { name, namespace: "ns", ...extra },
  spec: { replicas, selector: {}, template: { spec: { containers: [] } } },
});

const pod = (
  name: string,
  opts: { ready?: boolean; phase?: string; created?: string; node?: string; ip?: string } = {},
) =>
  ({
    metadata: {
      name,
      namespace: "ns",
      uid: `uid-${name}`,
      creationTimestamp: opts.created ?? "2024-01-01T00:00:00Z",
    },
    spec: {
      nodeName: opts.node ?? "fake-node",
      containers: [{ name: "c", ports: [{ name: "http", containerPort: 8080 }] }],
    },
    status: {
      phase: opts.phase ?? "Running",
      podIP: opts.ip,
      conditions: [
        { type: "Ready", status: opts.ready ? "True" : "False", lastTransitionTime: "2024-01-01T00:00:00Z" },
      ],
    },
  }) as Pod;

describe("$(VAR) expansion, as third_party/forked/golang/expansion", () => {
  const vars: Record<string, string> = { A: "alpha", B: "beta" };
  const lookup = (n: string) => vars[n];
  it.each([
    ["$(A)", "alpha"],
    ["x-$(A)-$(B)-y", "x-alpha-beta-y"],
    ["$(MISSING)", "$(MISSING)"],
    ["$$(A)", "$(A)"],
    ["$$", "$"],
    ["$x", "$x"],
    ["$(A", "$(A"],
    ["end$", "end$"],
    ["$$$(A)", "$alpha"],
  ])("%s → %s", (input, output) => {
    expect(expand(input, lookup)).toBe(output);
  });
});

describe("mountPath rewriting", () => {
  const mounts = [
    { mountPath: "/etc/app", hostPath: "/sandbox/volumes/config" },
    { mountPath: "/etc/app/tls", hostPath: "/sandbox/volumes/tls" },
  ];
  it("rewrites paths that start with a mountPath, the longest mount first", () => {
    expect(rewriteMountPaths("--config=/etc/app/config.yaml", mounts)).toBe(
      "--config=/sandbox/volumes/config/config.yaml",
    );
    expect(rewriteMountPaths("/etc/app/tls/key.pem", mounts)).toBe("/sandbox/volumes/tls/key.pem");
    expect(rewriteMountPaths("/etc/app", mounts)).toBe("/sandbox/volumes/config");
  });
  it("leaves other paths alone", () => {
    expect(rewriteMountPaths("/etc/application", mounts)).toBe("/etc/application");
    expect(rewriteMountPaths("/opt/etc/app/x", mounts)).toBe("/opt/etc/app/x");
  });
});

describe("rolling update arithmetic", () => {
  it("rounds maxSurge up and maxUnavailable down", () => {
    expect(resolveFenceposts(deployment(10, "25%", "25%"))).toEqual({ surge: 3, unavailable: 2 });
    expect(resolveFenceposts(deployment(1, "25%", "25%"))).toEqual({ surge: 1, unavailable: 0 });
    expect(resolveFenceposts(deployment(3, 0, 0))).toEqual({ surge: 0, unavailable: 1 });
    expect(maxUnavailable(deployment(2, 0, 5))).toBe(2);
    expect(scaledValue("50%", 3, true, 0)).toBe(2);
    expect(scaledValue("50%", 3, false, 0)).toBe(1);
  });
  it("grows the new ReplicaSet within replicas + maxSurge", () => {
    const d = deployment(3, 1, 0);
    const old = rs("old", 3);
    const fresh = rs("new", 0);
    expect(newRSNewReplicas(d, [old, fresh], fresh)).toBe(1);
    expect(newRSNewReplicas(d, [rs("old", 2), rs("new", 1)], rs("new", 1))).toBe(2);
    expect(newRSNewReplicas(d, [rs("old", 3), rs("new", 1)], rs("new", 1))).toBe(1);
  });
  it("splits a scale-up proportionally, by the max-replicas annotation", () => {
    const d = deployment(20, 3, 0);
    const a = rs("a", 6, { annotations: { "deployment.kubernetes.io/max-replicas": "13" } });
    expect(proportion(a, d, 10, 0)).toBe(Math.round((6 * 23) / 13) - 6);
  });
  it("hashes templates stably, ignoring the hash label when comparing", () => {
    const d = deployment(1);
    expect(computeHash(d.spec.template)).toBe(computeHash(structuredClone(d.spec.template)));
    expect(computeHash(d.spec.template)).not.toBe(computeHash(d.spec.template, 1));
    expect(computeHash(d.spec.template)).toMatch(/^[bcdfghjklmnpqrstvwxz2456789]+$/);
    const labelled = structuredClone(d.spec.template);
    labelled.metadata = { labels: { app: "a", "pod-template-hash": "x" } };
    expect(equalIgnoreHash(d.spec.template, labelled)).toBe(true);
  });
});

describe("pods", () => {
  it("scales down unscheduled, pending, not-ready and newer pods first", () => {
    const pods = [
      pod("ready-old", { ready: true, created: "2024-01-01T00:00:00Z" }),
      pod("ready-new", { ready: true, created: "2024-01-01T00:01:00Z" }),
      pod("unready", {}),
      pod("pending", { phase: "Pending" }),
      pod("unscheduled", { node: "" }),
    ];
    expect(pods.sort(compareForDeletion).map((p) => p.metadata.name)).toEqual([
      "unscheduled",
      "pending",
      "unready",
      "ready-new",
      "ready-old",
    ]);
  });
  it("counts a ready pod as available only after minReadySeconds", () => {
    const p = pod("a", { ready: true });
    const readySince = Date.parse("2024-01-01T00:00:00Z");
    expect(isPodAvailable(p, 0, readySince)).toBe(true);
    expect(isPodAvailable(p, 5, readySince + 4000)).toBe(false);
    expect(isPodAvailable(p, 5, readySince + 5001)).toBe(true);
    expect(availableAt(p, 5)).toBe(readySince + 5001);
    expect(isPodAvailable(pod("b", { ready: false }), 0)).toBe(false);
  });
  it("matches label selectors with expressions", () => {
    const labels = { app: "a", tier: "web" };
    expect(selectorMatches({ matchLabels: { app: "a" } }, labels)).toBe(true);
    expect(
      selectorMatches({ matchExpressions: [{ key: "tier", operator: "In", values: ["web"] }] }, labels),
    ).toBe(true);
    expect(
      selectorMatches({ matchExpressions: [{ key: "tier", operator: "NotIn", values: ["web"] }] }, labels),
    ).toBe(false);
    expect(selectorMatches({ matchExpressions: [{ key: "x", operator: "DoesNotExist" }] }, labels)).toBe(
      true,
    );
    expect(selectorMatches({ matchExpressions: [{ key: "x", operator: "Exists" }] }, labels)).toBe(false);
  });
});

describe("endpoints and the service proxy", () => {
  const svc: Service = {
    metadata: { name: "s", namespace: "ns" },
    spec: { selector: { app: "a" }, ports: [{ name: "web", port: 80, targetPort: "http" }] },
  };
  it("lists ready pods as addresses and others as notReadyAddresses, by resolved port", () => {
    const subsets = computeSubsets(svc, [
      pod("a", { ready: true, ip: "127.0.0.3" }),
      pod("b", { ready: false, ip: "127.0.0.2" }),
      pod("c", { ready: true }),
      pod("d", { ready: true, ip: "127.0.0.4", phase: "Succeeded" }),
    ]);
    expect(subsets).toHaveLength(1);
    expect(subsets[0]?.ports).toEqual([{ name: "web", port: 8080, protocol: "TCP" }]);
    expect(subsets[0]?.addresses?.map((a) => a.ip)).toEqual(["127.0.0.3"]);
    expect(subsets[0]?.notReadyAddresses?.map((a) => a.ip)).toEqual(["127.0.0.2"]);
    expect(resolvePort(pod("a"), 9000, 80)).toBe(9000);
    const backends = serviceBackends(svc, { metadata: { name: "s" }, subsets }, "web");
    expect(backends).toEqual([{ host: "127.0.0.3", port: 8080 }]);
    expect(serviceBackends(svc, { metadata: { name: "s" }, subsets }, 80)).toEqual(backends);
    expect(serviceBackends(svc, { metadata: { name: "s" }, subsets }, 81)).toEqual([]);
  });
});
