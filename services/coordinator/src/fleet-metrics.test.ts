import { create } from "@bufbuild/protobuf";
import {
  AcceleratorKind,
  HardwareSchema,
  ModelInfoSchema,
  TrustLevel,
} from "@darkbloom/protocol/provider/v1";
import { describe, expect, it } from "vitest";
import { acceleratorLabel, VersionLabels } from "./fleet-metrics.js";
import { CoordinatorMetrics } from "./metrics.js";
import { ProviderHandle } from "./routing/provider-handle.js";
import { heartbeat, judge, occupy, testProvider } from "./testing/test-providers.js";

/** Every series of one family as "label=value,…" → value, from prom-client's own reading of it. */
async function series(metrics: CoordinatorMetrics, name: string): Promise<Map<string, number>> {
  const family = (await metrics.registry.getMetricsAsJSON()).find((m) => m.name === name);
  if (!family) throw new Error(`no metric family ${name}`);
  const out = new Map<string, number>();
  for (const v of family.values) {
    const labels = Object.entries(v.labels)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, val]) => `${k}=${val}`)
      .join(",");
    out.set(labels, v.value);
  }
  return out;
}

function machine(
  version: string,
  accelerator: AcceleratorKind,
  trust = TrustLevel.SELF_SIGNED,
): ProviderHandle {
  return new ProviderHandle({
    id: `${version}-${accelerator}-${Math.random()}`,
    machineId: "",
    daemonVersion: version,
    engineBackend: "test",
    hardware: create(HardwareSchema, { accelerator }),
    models: [create(ModelInfoSchema, { id: "m" })],
    maxBatch: 2,
    maxContext: 0,
    trustLevel: trust,
    connectedAt: Date.now(),
    send: () => true,
  });
}

describe("fleet metrics", () => {
  it("reports no fleet series before a fleet is observed", async () => {
    const metrics = new CoordinatorMetrics({ defaultMetrics: false });
    expect((await series(metrics, "darkbloom_model_providers")).size).toBe(0);
    expect((await series(metrics, "darkbloom_providers")).size).toBe(0);
  });

  it("counts providers and slots per model by routing status, from the coordinator's own accounting", async () => {
    const providers = [
      testProvider({ models: ["a", "b"], maxBatch: 4 }),
      testProvider({ models: ["a"], maxBatch: 2 }),
      testProvider({ models: ["a"], maxBatch: 8 }),
      testProvider({ models: ["a"], maxBatch: 1 }),
    ];
    const [both, busy, draining, derouted] = providers as [
      ProviderHandle,
      ProviderHandle,
      ProviderHandle,
      ProviderHandle,
    ];
    occupy(both, 1);
    occupy(busy, 2);
    occupy(draining, 3);
    draining.markDraining();
    judge(derouted, { deRouted: true });
    // What providers claim about their busy slots plays no part: the coordinator counts its dispatches.
    heartbeat(busy, { busySlots: 0 });
    const metrics = new CoordinatorMetrics({ defaultMetrics: false, modelOrigin: () => "catalog" });
    metrics.observeFleet({ providers: () => providers, measuredRates: () => [] });

    expect(Object.fromEntries(await series(metrics, "darkbloom_model_providers"))).toEqual({
      "model=a,status=routable": 2,
      "model=a,status=draining": 1,
      "model=a,status=derouted": 1,
      "model=b,status=routable": 1,
    });
    expect(Object.fromEntries(await series(metrics, "darkbloom_model_slots"))).toEqual({
      // busy: 1 + 2 + 3 + 0; free: only routable providers' (3 + 0), not the draining one's 5.
      "model=a,state=busy": 6,
      "model=a,state=free": 3,
      "model=b,state=busy": 1,
      "model=b,state=free": 3,
    });

    // Series of models nobody serves any more vanish at the next scrape.
    providers.splice(0, 1);
    expect(
      [...(await series(metrics, "darkbloom_model_providers")).keys()].some((k) => k.includes("model=b")),
    ).toBe(false);
  });

  it("averages reported KV use over the providers that have the model loaded, clamped to 0..1", async () => {
    const honest = testProvider({ models: ["a"] });
    const liar = testProvider({ models: ["a"] });
    const idle = testProvider({ models: ["a"] });
    heartbeat(honest, { kvCacheUsage: 0.5, loadedModels: ["a"] });
    heartbeat(liar, { kvCacheUsage: 1e9, loadedModels: ["a", "not-advertised"] });
    heartbeat(idle, { kvCacheUsage: 0.9, loadedModels: [], state: 1 });
    const metrics = new CoordinatorMetrics({ defaultMetrics: false, modelOrigin: () => "catalog" });
    metrics.observeFleet({ providers: () => [honest, liar, idle], measuredRates: () => [] });
    // (0.5 + 1) / 2: the idle provider has nothing loaded; the liar's claim is clamped to 1, and a
    // model it loaded but never advertised is not a series.
    expect(Object.fromEntries(await series(metrics, "darkbloom_model_kv_cache_usage_ratio"))).toEqual({
      "model=a": 0.75,
    });
  });

  it("reports the measured rates per model, and models past the label budget as other", async () => {
    const metrics = new CoordinatorMetrics({
      defaultMetrics: false,
      modelOrigin: () => "catalog",
      maxModelLabels: 2,
    });
    const rates = new Map([
      ["m1", 40],
      ["m2", 60],
      ["m3", 10],
      ["m4", 30],
    ]);
    metrics.observeFleet({
      providers: () => [],
      measuredRates: (kind) => (kind === "decode" ? rates : new Map([["m1", 900]])),
    });
    expect(Object.fromEntries(await series(metrics, "darkbloom_model_decode_tokens_per_second"))).toEqual({
      "model=m1": 40,
      "model=m2": 60,
      "model=other": 20,
    });
    expect(Object.fromEntries(await series(metrics, "darkbloom_model_prefill_tokens_per_second"))).toEqual({
      "model=m1": 900,
    });
  });

  it("counts providers by version, trust and accelerator, with versions a stranger cannot multiply", async () => {
    const fleet = [
      machine("1.2.0", AcceleratorKind.METAL, TrustLevel.HARDWARE),
      machine("1.2.0", AcceleratorKind.METAL, TrustLevel.HARDWARE),
      machine("1.1.9", AcceleratorKind.CUDA),
      machine("not a version", AcceleratorKind.CPU, TrustLevel.NONE),
    ];
    const metrics = new CoordinatorMetrics({ defaultMetrics: false });
    metrics.observeFleet({ providers: () => fleet, measuredRates: () => [] });
    expect(Object.fromEntries(await series(metrics, "darkbloom_providers"))).toEqual({
      "accelerator=metal,trust=hardware,version=1.2.0": 2,
      "accelerator=cuda,trust=self_signed,version=1.1.9": 1,
      "accelerator=cpu,trust=none,version=other": 1,
    });

    const versions = new VersionLabels(3);
    const labels = Array.from({ length: 100 }, (_, i) => versions.label(`9.9.${i}`));
    expect(new Set(labels)).toEqual(new Set(["9.9.0", "9.9.1", "9.9.2", "other"]));
    expect(versions.label("9.9.1")).toBe("9.9.1");
    expect(versions.label(`1.0.0-${"x".repeat(200)}`)).toBe("other");
    expect(acceleratorLabel(undefined)).toBe("unspecified");
    expect(acceleratorLabel(99 as AcceleratorKind)).toBe("other");
  });

  it("counts forwarded requests by direction, bounded model and result", async () => {
    const metrics = new CoordinatorMetrics({
      defaultMetrics: false,
      modelOrigin: (m) => (m === "a" ? "catalog" : undefined),
    });
    metrics.forwarded.inc({ direction: "sent", model: "a", result: "admitted" });
    metrics.forwarded.inc({ direction: "received", model: "made-up", result: "refused" });
    metrics.forwarded.inc({ direction: "sideways", model: "a", result: "maybe" });
    expect(Object.fromEntries(await series(metrics, "darkbloom_forwarded_requests_total"))).toEqual({
      "direction=sent,model=a,result=admitted": 1,
      "direction=received,model=other,result=refused": 1,
      "direction=other,model=a,result=other": 1,
    });
  });
});
