import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { InvalidArgumentError } from "../store/errors.js";
import {
  createTestDatabase,
  startTestPostgres,
  type TestDatabase,
  type TestPostgres,
} from "../testing/test-database.js";
import { ModelNotFoundError } from "./errors.js";
import { ModelCatalog } from "./model-catalog.js";

let server: TestPostgres;
let db: TestDatabase;
const catalogs: ModelCatalog[] = [];

beforeAll(async () => {
  server = await startTestPostgres();
});
afterAll(async () => {
  await server?.stop();
});
beforeEach(async () => {
  db = await createTestDatabase(server.url);
});
afterEach(async () => {
  for (const catalog of catalogs.splice(0)) catalog.stop();
  await db?.drop();
});

async function startedCatalog(refreshIntervalMs?: number): Promise<ModelCatalog> {
  const catalog = new ModelCatalog(db.pool, refreshIntervalMs ? { refreshIntervalMs } : {});
  catalogs.push(catalog);
  await catalog.start();
  return catalog;
}

const qwen = { id: "qwen3-0.6b", inputMicroUsdPerMillion: 100_000n, outputMicroUsdPerMillion: 400_000n };

describe("ModelCatalog", () => {
  it("serves its writes at once, from memory, sorted by id", async () => {
    const catalog = await startedCatalog();
    expect(catalog.list()).toEqual([]);
    const stored = await catalog.upsert({ ...qwen, ownedBy: "qwen", displayName: "Qwen3 0.6B" });
    await catalog.upsert({
      id: "Llama-3.2-1B",
      inputMicroUsdPerMillion: 0n,
      outputMicroUsdPerMillion: 0n,
      enabled: false,
    });
    expect(stored).toMatchObject({ ...qwen, ownedBy: "qwen", displayName: "Qwen3 0.6B", enabled: true });
    expect(catalog.list().map((model) => model.id)).toEqual(["Llama-3.2-1B", "qwen3-0.6b"]);
    expect(catalog.get("Llama-3.2-1B")).toMatchObject({ enabled: false, displayName: "Llama-3.2-1B" });
    // Reads come from the snapshot: a write behind its back shows only after a refresh.
    const lone = new ModelCatalog(db.pool);
    catalogs.push(lone);
    await lone.start();
    await db.pool.query("UPDATE models SET output_micro_usd_per_million = 1");
    expect(lone.get("qwen3-0.6b")?.outputMicroUsdPerMillion).toBe(400_000n);
  });

  it("updates prices in place, keeping the creation time", async () => {
    const catalog = await startedCatalog();
    const first = await catalog.upsert(qwen);
    const second = await catalog.upsert({ ...qwen, outputMicroUsdPerMillion: 500_000n });
    expect(second.createdAt).toEqual(first.createdAt);
    expect(second.updatedAt.getTime()).toBeGreaterThanOrEqual(first.updatedAt.getTime());
    expect(catalog.get(qwen.id)?.outputMicroUsdPerMillion).toBe(500_000n);
    expect(catalog.list()).toHaveLength(1);
  });

  it("keeps an embedding model's shortest dimensions, and clears them when a write has none", async () => {
    const catalog = await startedCatalog();
    expect((await catalog.upsert({ ...qwen, embeddingMinDimensions: 32 })).embeddingMinDimensions).toBe(32);
    const other = await startedCatalog();
    expect(other.get(qwen.id)?.embeddingMinDimensions).toBe(32);
    expect((await catalog.upsert(qwen)).embeddingMinDimensions).toBeUndefined();
  });

  it("picks up other replicas' writes on its periodic refresh", async () => {
    const catalog = await startedCatalog(50);
    const other = await startedCatalog();
    await other.upsert(qwen);
    expect(catalog.get(qwen.id)).toBeUndefined();
    await expect.poll(() => catalog.get(qwen.id)?.id, { timeout: 5_000 }).toBe(qwen.id);
    await other.delete(qwen.id);
    await expect.poll(() => catalog.get(qwen.id), { timeout: 5_000 }).toBeUndefined();
  });

  it("deletes models and names a missing one", async () => {
    const catalog = await startedCatalog();
    await catalog.upsert(qwen);
    await catalog.delete(qwen.id);
    expect(catalog.get(qwen.id)).toBeUndefined();
    await expect(catalog.delete(qwen.id)).rejects.toThrow(new ModelNotFoundError(qwen.id));
  });

  it("validates ids and prices", async () => {
    const catalog = await startedCatalog();
    const bad = [
      { ...qwen, id: "" },
      { ...qwen, id: "x".repeat(129) },
      { ...qwen, id: "has space" },
      { ...qwen, id: "semi;colon" },
      { ...qwen, inputMicroUsdPerMillion: -1n },
      { ...qwen, outputMicroUsdPerMillion: 2n ** 63n },
      { ...qwen, inputMicroUsdPerMillion: 1.5 as unknown as bigint },
      { ...qwen, displayName: "d".repeat(201) },
      { ...qwen, embeddingMinDimensions: 0 },
      { ...qwen, embeddingMinDimensions: 1.5 },
      { ...qwen, embeddingMinDimensions: 65_537 },
    ];
    for (const model of bad) await expect(catalog.upsert(model)).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(catalog.upsert({ ...qwen, id: "a b" })).rejects.toThrow(
      /model id must be 1 to 128 characters/,
    );
    await expect(catalog.upsert({ ...qwen, inputMicroUsdPerMillion: -5n })).rejects.toThrow(
      /input_micro_usd_per_million must be an integer of at least 0/,
    );
    const ok = await catalog.upsert({ ...qwen, id: "org/model:v1.2_Q4-K_M" });
    expect(ok.id).toBe("org/model:v1.2_Q4-K_M");
    expect(catalog.list()).toHaveLength(1);
  });

  it("refuses reads before start", () => {
    expect(() => new ModelCatalog(db.pool).list()).toThrow(/not started/);
  });
});
