import type { V1Service } from "@kubernetes/client-node";
import type { Coordinator } from "../../../api/v1alpha1/coordinator-types.js";
import { identity, ownedMeta, selectorLabels } from "./labels.js";

/**
 * The Service in front of the replicas: `http` for consumers, providers and the admin API (h2c:
 * providers hold HTTP/2 streams, which a mesh or gateway must not downgrade; `https`, the IANA
 * service name, when the replicas serve TLS: HTTP/2 or HTTP/1.1 by ALPN) and `metrics`.
 */
export function buildService(coordinator: Coordinator): V1Service {
  const { service, metrics } = coordinator.spec;
  const meta = ownedMeta(coordinator, identity(coordinator).name);
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: service.annotations ? { ...meta, annotations: { ...service.annotations } } : meta,
    spec: {
      type: service.type,
      selector: selectorLabels(coordinator),
      ports: [
        {
          name: "http",
          port: service.port,
          targetPort: "http",
          protocol: "TCP",
          appProtocol: coordinator.spec.tls ? "https" : "kubernetes.io/h2c",
        },
        { name: "metrics", port: metrics.port, targetPort: "metrics", protocol: "TCP" },
      ],
    },
  };
}
