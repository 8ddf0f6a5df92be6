import { describe, expect, it } from "vitest";
import { ModelLabels, type ModelOrigin, reasonLabel, statusLabel } from "./metric-labels.js";
import { CoordinatorMetrics } from "./metrics.js";

describe("metric labels", () => {
  it("models: catalog and served ones up to the budget, served-only ones to half of it", () => {
    const origins = new Map<string, ModelOrigin>([
      ["c1", "catalog"],
      ["c2", "catalog"],
      ["c3", "catalog"],
      ["s1", "served"],
      ["s2", "served"],
    ]);
    const labels = new ModelLabels((m) => origins.get(m), 4);
    expect(labels.label("s1")).toBe("s1");
    expect(labels.label("s2")).toBe("s2");
    expect(labels.label("s3-unknown")).toBe("other");
    origins.set("s3", "served");
    expect(labels.label("s3")).toBe("other"); // half of 4 taken by served-only models
    expect(labels.label("c1")).toBe("c1");
    expect(labels.label("c2")).toBe("c2");
    expect(labels.label("c3")).toBe("other"); // the budget is spent
    expect(labels.label("s1")).toBe("s1"); // admitted once, kept
    origins.delete("s1");
    expect(labels.label("s1")).toBe("s1");
    expect(labels.label("")).toBe("-");
  });

  it("reasons and statuses: known values only", () => {
    expect(reasonLabel("missed_heartbeats")).toBe("missed_heartbeats");
    expect(reasonLabel("challenge_failed")).toBe("challenge_failed");
    expect(reasonLabel("chunk_not_sealed")).toBe("chunk_not_sealed");
    expect(reasonLabel("protocol violation: chunk for an unknown choice")).toBe("protocol_violation");
    expect(reasonLabel("provider untrusted: chunk_not_sealed")).toBe("provider_untrusted");
    expect(reasonLabel("anything-a-provider-wrote")).toBe("other");
    expect(reasonLabel("drained by an administrator")).toBe("other");
    expect(statusLabel("404")).toBe("404");
    expect(statusLabel("4040")).toBe("other");
  });

  it("a gauge whose values collapse into one series reports their sum", async () => {
    const metrics = new CoordinatorMetrics({ defaultMetrics: false, modelOrigin: () => undefined });
    metrics.queueDepth.set({ model: "x" }, 2);
    metrics.queueDepth.set({ model: "y" }, 3);
    expect(await metrics.registry.getSingleMetricAsString("darkbloom_queue_depth")).toContain(
      'darkbloom_queue_depth{model="other"} 5',
    );
    metrics.queueDepth.set({ model: "x" }, 0);
    expect(await metrics.registry.getSingleMetricAsString("darkbloom_queue_depth")).toContain(
      'darkbloom_queue_depth{model="other"} 3',
    );
  });
});
