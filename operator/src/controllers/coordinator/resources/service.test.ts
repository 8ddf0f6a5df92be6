import { describe, expect, it } from "vitest";
import { storedCoordinator } from "../../../testing/coordinator-fixture.js";
import { labels, ownerReference, selectorLabels } from "./labels.js";
import { buildService } from "./service.js";

describe("Service", () => {
  it("exposes http (h2c) and metrics on the serving pods", () => {
    const coordinator = storedCoordinator();
    expect(buildService(coordinator)).toEqual({
      apiVersion: "v1",
      kind: "Service",
      metadata: {
        name: "main",
        namespace: "darkbloom",
        labels: labels(coordinator),
        ownerReferences: [ownerReference(coordinator)],
      },
      spec: {
        type: "ClusterIP",
        selector: selectorLabels(coordinator),
        ports: [
          { name: "http", port: 80, targetPort: "http", protocol: "TCP", appProtocol: "kubernetes.io/h2c" },
          { name: "metrics", port: 9090, targetPort: "metrics", protocol: "TCP" },
        ],
      },
    });
  });

  it("takes the type, port and annotations from the spec", () => {
    const coordinator = storedCoordinator({
      service: { type: "LoadBalancer", port: 443, annotations: { "lb.example/internal": "true" } },
      metrics: { port: 9100 },
    });
    const service = buildService(coordinator);
    expect(service.metadata?.annotations).toEqual({ "lb.example/internal": "true" });
    expect(service.spec?.type).toBe("LoadBalancer");
    expect(service.spec?.ports?.map((p) => [p.name, p.port])).toEqual([
      ["http", 443],
      ["metrics", 9100],
    ]);
  });

  it("says https when the replicas serve TLS", () => {
    const coordinator = storedCoordinator({ peerPort: 8443, tls: { secretName: "main-tls" } });
    expect(buildService(coordinator).spec?.ports?.[0]).toEqual({
      name: "http",
      port: 80,
      targetPort: "http",
      protocol: "TCP",
      appProtocol: "https",
    });
  });
});
