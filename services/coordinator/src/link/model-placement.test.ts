import { MemoryPressure } from "@darkbloom/protocol/provider/v1";
import { ScriptedProvider } from "@darkbloom/testing";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { adminClient, startTestCoordinator, type TestCoordinator } from "../testing/test-coordinator.js";
import { startTestPostgres, type TestPostgres } from "../testing/test-database.js";

// Issue 12 item 5: models loaded onto providers ahead of demand, unloaded under memory pressure,
// never thrashing (a cooldown per provider and model, which an administrator's command starts too).

let server: TestPostgres;
let t: TestCoordinator;
const COOLDOWN_MS = 800;

beforeAll(async () => {
  server = await startTestPostgres();
  t = await startTestCoordinator(server.url, { placementIntervalMs: 100, placementCooldownMs: COOLDOWN_MS });
  for (const id of ["pm1", "pm2"]) {
    await t.coordinator.catalog.upsert({ id, inputMicroUsdPerMillion: 1n, outputMicroUsdPerMillion: 1n });
  }
});
afterAll(async () => {
  await t?.close();
  await server?.stop();
});

const providers: ScriptedProvider[] = [];
afterEach(async () => {
  await Promise.all(providers.splice(0).map((p) => p.stop()));
});

async function provider(machineId: string, models: string[]): Promise<ScriptedProvider> {
  const p = new ScriptedProvider({
    baseUrl: t.url,
    models: models.map((id) => ({ id })),
    machineId,
    heartbeatIntervalMs: 100,
  });
  providers.push(p);
  await p.start();
  return p;
}

const ops = (p: ScriptedProvider) => p.loadModels.map((c) => `${c.kind} ${c.modelId}`);

describe("model placement", () => {
  it("loads a catalog model no provider has loaded, after the cooldown of an administrator's unload", async () => {
    const p = await provider("placement-1", ["pm1", "pm2"]);
    const unloadedAt = Date.now();
    await adminClient(t.url).unloadProviderModel({ providerId: p.providerId ?? "", modelId: "pm2" });
    await expect.poll(() => ops(p), { timeout: 5_000 }).toEqual(["unload pm2", "load pm2"]);
    // Not before the cooldown the administrator's command started: no thrashing against it.
    const reloaded = p.loadModels.length === 2 ? Date.now() : 0;
    expect(reloaded - unloadedAt).toBeGreaterThanOrEqual(COOLDOWN_MS);
    // Loaded again, nothing more happens.
    await new Promise((r) => setTimeout(r, 3 * COOLDOWN_MS));
    expect(ops(p)).toEqual(["unload pm2", "load pm2"]);
  });

  it("unloads an idle model from a provider under memory pressure, but never its last loaded copy", async () => {
    const pressed = await provider("placement-pressed", ["pm1", "pm2"]);
    const other = await provider("placement-other", ["pm1"]);
    pressed.memoryPressure = MemoryPressure.WARN;
    // pm1 is loaded on the other provider too: the pressed one frees it. pm2 is loaded only here.
    await expect.poll(() => ops(pressed), { timeout: 5_000 }).toEqual(["unload pm1"]);
    await new Promise((r) => setTimeout(r, 3 * COOLDOWN_MS));
    expect(ops(pressed)).toEqual(["unload pm1"]);
    expect(ops(other)).toEqual([]);
  });
});
