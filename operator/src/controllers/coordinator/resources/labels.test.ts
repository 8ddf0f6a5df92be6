import { describe, expect, it } from "vitest";
import { FIXTURE_UID, storedCoordinator } from "../../../testing/coordinator-fixture.js";
import { identity, labels, ownedMeta, ownerReference, selectorLabels } from "./labels.js";

describe("labels and ownership", () => {
  const coordinator = storedCoordinator();

  it("labels every object with the app, instance, component and manager", () => {
    expect(labels(coordinator)).toEqual({
      "app.kubernetes.io/name": "darkbloom-coordinator",
      "app.kubernetes.io/instance": "main",
      "app.kubernetes.io/component": "coordinator",
      "app.kubernetes.io/managed-by": "darkbloom-operator",
    });
    expect(labels(coordinator, "migration")["app.kubernetes.io/component"]).toBe("migration");
  });

  it("selects the serving pods only: the migration Job's pods do not match", () => {
    const selector = selectorLabels(coordinator);
    expect(selector).toEqual({
      "app.kubernetes.io/name": "darkbloom-coordinator",
      "app.kubernetes.io/instance": "main",
      "app.kubernetes.io/component": "coordinator",
    });
    const migration = labels(coordinator, "migration");
    expect(Object.entries(selector).every(([k, v]) => migration[k] === v)).toBe(false);
  });

  it("makes the Coordinator the controlling owner", () => {
    expect(ownerReference(coordinator)).toEqual({
      apiVersion: "darkbloom.dev/v1alpha1",
      kind: "Coordinator",
      name: "main",
      uid: FIXTURE_UID,
      controller: true,
      blockOwnerDeletion: true,
    });
    expect(ownedMeta(coordinator, "main-peer")).toEqual({
      name: "main-peer",
      namespace: "darkbloom",
      labels: labels(coordinator),
      ownerReferences: [ownerReference(coordinator)],
    });
  });

  it("refuses a Coordinator that was never stored (no uid to own by)", () => {
    const unsaved = storedCoordinator();
    delete unsaved.metadata.uid;
    expect(() => identity(unsaved)).toThrow(/metadata.name, namespace and uid/);
    expect(() => ownerReference(unsaved)).toThrow();
  });
});
