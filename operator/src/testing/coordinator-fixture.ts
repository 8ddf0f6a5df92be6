import type { Coordinator, CoordinatorSpec } from "../api/v1alpha1/coordinator-types.js";
import { API_VERSION } from "../api/v1alpha1/group-version.js";

// For the builders' tests: a Coordinator as the API server stores it, every default applied.

export const FIXTURE_UID = "4f0a3c1e-0000-4000-8000-000000000001";

export function storedCoordinator(spec: Partial<CoordinatorSpec> = {}, name = "main"): Coordinator {
  return {
    apiVersion: API_VERSION,
    kind: "Coordinator",
    metadata: { name, namespace: "darkbloom", uid: FIXTURE_UID, generation: 1 },
    spec: {
      replicas: 2,
      image: "ghcr.io/darkbloom/coordinator:1.4.0",
      database: { secretRef: { name: "db", key: "url" } },
      adminKeySecretRef: { name: "admin", key: "admin-key" },
      service: { type: "ClusterIP", port: 80 },
      disruptionBudget: { enabled: true, maxUnavailable: 1 },
      drainSeconds: 30,
      metrics: { port: 9090 },
      ...spec,
    },
  };
}
