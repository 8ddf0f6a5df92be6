// Drill: demand-driven model placement with a real daemon serving two synthesized models.
//
// An administrator unloads one of them (`admin providers unload`): the daemon frees it, its
// heartbeats say so, and the coordinator's listing shows it. Once the cooldown that command started
// has passed, model placement loads it again (no provider had it loaded), and a request for it is
// served.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestbed, type Testbed, waitUntil } from "../testbed/index.js";
import { CREDIT, greedyChat } from "./support.js";

const MODELS = ["tiny", "tiny-llama"];
const COOLDOWN_MS = 3_000;

let tb: Testbed;

beforeAll(async () => {
  tb = await startTestbed({
    providers: [{ models: MODELS }],
    coordinatorArgs: [
      ...["--heartbeat-interval", "500ms"],
      ...["--placement-interval", "250ms", "--placement-cooldown", `${COOLDOWN_MS}ms`],
    ],
  });
}, 180_000);

afterAll(async () => {
  await tb?.stop();
}, 60_000);

async function loaded(): Promise<string[]> {
  const { providers } = await tb.admin.listProviders({});
  return [...(providers[0]?.loadedModels ?? [])].sort();
}

describe("model placement on the testbed", () => {
  it("reloads a model an administrator unloaded once the cooldown has passed, and serves it", async () => {
    const account = await tb.createAccount(CREDIT);
    // Both models get loaded (placement loads what no provider has loaded; a request loads its own).
    await waitUntil(async () => (await loaded()).join() === MODELS.join(), 30_000, "both models loaded", [
      tb.coordinator,
      ...tb.providers,
    ]);
    const { providers } = await tb.admin.listProviders({});
    const providerId = providers[0]?.providerId ?? "";
    const unloadedAt = Date.now();
    await tb.admin.unloadProviderModel({ providerId, modelId: "tiny-llama" });
    await waitUntil(async () => (await loaded()).join() === "tiny", 10_000, "tiny-llama unloaded", [
      tb.coordinator,
    ]);
    await waitUntil(async () => (await loaded()).join() === MODELS.join(), 30_000, "tiny-llama reloaded", [
      tb.coordinator,
      ...tb.providers,
    ]);
    expect(Date.now() - unloadedAt).toBeGreaterThanOrEqual(COOLDOWN_MS);
    const res = await tb.chat(account.apiKey, greedyChat("hello", { maxTokens: 8, model: "tiny-llama" }), {
      signal: AbortSignal.timeout(30_000),
    });
    expect(res.status).toBe(200);
    await res.text();
  });
});
