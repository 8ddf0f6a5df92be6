import { describe, expect, it } from "vitest";
import type { Condition } from "./common-types.js";
import { findCondition, isTrue, setCondition, toKubeTime } from "./conditions.js";

const T0 = new Date("2030-01-01T00:00:00.123Z");
const T1 = new Date("2030-01-01T00:05:00.000Z");

describe("conditions", () => {
  it("appends a new condition with the time (whole seconds) and the generation", () => {
    const conditions = setCondition(
      undefined,
      { type: "Ready", status: "False", reason: "RollingOut", message: "m" },
      3,
      T0,
    );
    expect(conditions).toEqual([
      {
        type: "Ready",
        status: "False",
        reason: "RollingOut",
        message: "m",
        lastTransitionTime: "2030-01-01T00:00:00Z",
        observedGeneration: 3,
      },
    ]);
  });

  it("keeps lastTransitionTime while the status holds, so a converged reconcile changes nothing", () => {
    const first = setCondition(
      [],
      { type: "Ready", status: "True", reason: "ReplicasReady", message: "2 of 2" },
      1,
      T0,
    );
    const again = setCondition(
      first,
      { type: "Ready", status: "True", reason: "ReplicasReady", message: "2 of 2" },
      1,
      T1,
    );
    expect(again).toEqual(first);
    const reworded = setCondition(
      first,
      { type: "Ready", status: "True", reason: "ReplicasReady", message: "3 of 3" },
      2,
      T1,
    );
    expect(reworded[0]).toMatchObject({
      message: "3 of 3",
      observedGeneration: 2,
      lastTransitionTime: toKubeTime(T0),
    });
    const flipped = setCondition(
      first,
      { type: "Ready", status: "False", reason: "ReplicasUnavailable", message: "0 of 2" },
      2,
      T1,
    );
    expect(flipped[0]).toMatchObject({ status: "False", lastTransitionTime: "2030-01-01T00:05:00Z" });
  });

  it("replaces in place, leaves the others alone and does not mutate its input", () => {
    const input: Condition[] = [
      {
        type: "Available",
        status: "True",
        reason: "A",
        message: "",
        lastTransitionTime: "2029-01-01T00:00:00Z",
      },
      { type: "Ready", status: "True", reason: "R", message: "", lastTransitionTime: "2029-01-01T00:00:00Z" },
    ];
    const snapshot = structuredClone(input);
    const out = setCondition(
      input,
      { type: "Available", status: "False", reason: "B", message: "x" },
      undefined,
      T1,
    );
    expect(input).toEqual(snapshot);
    expect(out.map((c) => c.type)).toEqual(["Available", "Ready"]);
    expect(out[1]).toBe(input[1]);
    expect(out[0]).not.toHaveProperty("observedGeneration");
  });

  it("finds conditions and tells whether one is True", () => {
    const conditions = setCondition(
      [],
      { type: "Migrated", status: "True", reason: "MigrationSucceeded", message: "" },
      1,
      T0,
    );
    expect(findCondition(conditions, "Migrated")?.reason).toBe("MigrationSucceeded");
    expect(findCondition(conditions, "Ready")).toBeUndefined();
    expect(findCondition(undefined, "Ready")).toBeUndefined();
    expect(isTrue(conditions, "Migrated")).toBe(true);
    expect(isTrue(conditions, "Ready")).toBe(false);
    expect(
      isTrue(
        setCondition(conditions, { type: "Migrated", status: "Unknown", reason: "X", message: "" }, 1, T1),
        "Migrated",
      ),
    ).toBe(false);
  });
});
