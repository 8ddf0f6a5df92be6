import { describe, expect, it } from "vitest";
import { storedCoordinator } from "../../../testing/coordinator-fixture.js";
import { ownerReference, selectorLabels } from "./labels.js";
import { buildPodDisruptionBudget } from "./pod-disruption-budget.js";

describe("PodDisruptionBudget", () => {
  it("bounds voluntary disruptions of the serving pods", () => {
    const coordinator = storedCoordinator({ disruptionBudget: { enabled: true, maxUnavailable: 2 } });
    expect(buildPodDisruptionBudget(coordinator)).toEqual({
      apiVersion: "policy/v1",
      kind: "PodDisruptionBudget",
      metadata: expect.objectContaining({
        name: "main",
        namespace: "darkbloom",
        ownerReferences: [ownerReference(coordinator)],
      }),
      spec: {
        maxUnavailable: 2,
        selector: { matchLabels: selectorLabels(coordinator) },
        unhealthyPodEvictionPolicy: "AlwaysAllow",
      },
    });
  });

  it("is not built when disabled", () => {
    expect(
      buildPodDisruptionBudget(
        storedCoordinator({ disruptionBudget: { enabled: false, maxUnavailable: 1 } }),
      ),
    ).toBeUndefined();
  });
});
