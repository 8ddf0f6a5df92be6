import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Client } from "@connectrpc/connect";
import { synthesizeModel, writeVocabularyFile } from "@darkbloom/models";
import type { AdminService } from "@darkbloom/protocol/admin/v1";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCliCaptured } from "../testing/test-cli.js";
import {
  adminClient,
  startTestCoordinator,
  TEST_ADMIN_KEY,
  type TestCoordinator,
} from "../testing/test-coordinator.js";
import { startTestPostgres, type TestPostgres } from "../testing/test-database.js";
import { uploadVocabulary } from "./vocabulary-upload.js";

// Catalog vocabularies through the admin API and CLI, against real PostgreSQL and a real coordinator:
// uploaded in parts, checked against their hash, vetted, shared by hash, and taken away.

let server: TestPostgres;
let t: TestCoordinator;
let admin: Client<typeof AdminService>;
let dir: string;
let model: string;
let vocabulary: Uint8Array;
let sha256: string;

const price = { inputMicroUsdPerMillion: 1n, outputMicroUsdPerMillion: 1n };

beforeAll(async () => {
  server = await startTestPostgres();
  t = await startTestCoordinator(server.url);
  for (const id of ["m1", "m2", "m3", "cli"]) await t.coordinator.catalog.upsert({ id, ...price });
  admin = adminClient(t.url);
  dir = await mkdtemp(join(tmpdir(), "darkbloom-vocabulary-test-"));
  model = join(dir, "tiny.gguf");
  await synthesizeModel({ shape: "tiny", seed: 5, outPath: model });
  await writeVocabularyFile(model, join(dir, "tiny.vocab.gguf"));
  vocabulary = await readFile(join(dir, "tiny.vocab.gguf"));
  sha256 = createHash("sha256").update(vocabulary).digest("hex");
}, 120_000);

afterAll(async () => {
  await t?.close();
  await server?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const part = (modelId: string, offset: number, end: number, over: { sha256?: string; size?: number } = {}) =>
  admin.uploadModelVocabulary({
    modelId,
    sha256: over.sha256 ?? sha256,
    sizeBytes: BigInt(over.size ?? vocabulary.byteLength),
    offset: BigInt(offset),
    data: vocabulary.subarray(offset, end),
  });

describe("model vocabularies", () => {
  it("arrive in ordered parts; a resent part is accepted once, a part out of order is refused with the offset expected", async () => {
    const size = vocabulary.byteLength;
    const third = Math.floor(size / 3);
    expect((await part("m1", 0, third)).receivedBytes).toBe(BigInt(third));
    // The reply to that part was "lost": sending it again changes nothing.
    expect((await part("m1", 0, third)).receivedBytes).toBe(BigInt(third));
    await expect(part("m1", 2 * third, size)).rejects.toThrow(new RegExp(`expects offset ${third}`));
    // An empty part asks where the upload stands.
    expect((await part("m1", 0, 0)).receivedBytes).toBe(BigInt(third));
    expect(t.coordinator.catalog.get("m1")?.vocabularySha256).toBeUndefined();
    const done = await part("m1", third, size);
    expect(done.receivedBytes).toBe(BigInt(size));
    expect(done.model).toMatchObject({ id: "m1", vocabularySha256: sha256 });
    expect(t.coordinator.catalog.get("m1")?.vocabularySha256).toBe(sha256);
  });

  it("is given to another model at once when the same file is stored already", async () => {
    const first = await part("m2", 0, 0);
    expect(first.model).toMatchObject({ id: "m2", vocabularySha256: sha256 });
  });

  it("refuses a file that is not what its hash says, or not a vocabulary, and stores nothing", async () => {
    const garbage = new Uint8Array(4096).fill(7);
    const garbageSha = createHash("sha256").update(garbage).digest("hex");
    await expect(
      admin.uploadModelVocabulary({
        modelId: "m3",
        sha256: "0".repeat(64),
        sizeBytes: 4096n,
        offset: 0n,
        data: garbage,
      }),
    ).rejects.toThrow(/SHA-256 .* not 0{64}/);
    await expect(
      admin.uploadModelVocabulary({
        modelId: "m3",
        sha256: garbageSha,
        sizeBytes: 4096n,
        offset: 0n,
        data: garbage,
      }),
    ).rejects.toThrow(/the vocabulary was refused: not a vocabulary GGUF/);
    await expect(part("nope", 0, 0)).rejects.toThrow(/not in the catalog/);
    await expect(part("m3", 0, 10, { size: 128 * 1024 * 1024 })).rejects.toThrow(/size_bytes must be from 1/);
    expect(t.coordinator.catalog.get("m3")?.vocabularySha256).toBeUndefined();
    const pool = new pg.Pool({ connectionString: t.coordinator.databaseUrl });
    try {
      const { rows } = await pool.query("SELECT count(*)::int AS n FROM vocabulary_uploads");
      expect(rows[0].n).toBe(0);
    } finally {
      await pool.end();
    }
  });

  it("is uploaded from a whole model file by the CLI (weights never sent), listed, and cleared", async () => {
    const target = ["--url", t.url, "--admin-key", TEST_ADMIN_KEY];
    const set = await runCliCaptured(["admin", "models", "vocabulary", "cli", model, ...target], {});
    expect(set).toEqual({ code: 0, stdout: `cli: usage counted with vocabulary ${sha256}\n`, stderr: "" });
    const list = await runCliCaptured(["admin", "models", "list", ...target], {});
    expect(list.stdout).toMatch(new RegExp(`cli .* counted \\(${sha256.slice(0, 12)}\\)`));
    const cleared = await runCliCaptured(["admin", "models", "vocabulary", "cli", "--clear", ...target], {});
    expect(cleared.stdout).toBe("cli: no vocabulary; usage is bounded from the text, not counted\n");
    expect(t.coordinator.catalog.get("cli")?.vocabularySha256).toBeUndefined();

    const notGguf = join(dir, "not.gguf");
    await writeFile(notGguf, "hello");
    for (const argv of [
      ["admin", "models", "vocabulary", "cli", join(dir, "missing.gguf")],
      ["admin", "models", "vocabulary", "cli", notGguf],
      ["admin", "models", "vocabulary", "cli"],
      ["admin", "models", "vocabulary", "cli", model, "--clear"],
    ]) {
      const run = await runCliCaptured([...argv, ...target], {});
      expect(run.code).toBe(64);
      expect(run.stderr).toMatch(/^darkbloom-coordinator: [^\n]+\n$/);
    }
  });

  it("is what the upload helper sends, resuming where the coordinator stands", async () => {
    await t.coordinator.catalog.upsert({ id: "m4", ...price });
    await t.coordinator.catalog.setTokenizer("m4", undefined);
    const stored = await uploadVocabulary(admin, "m4", vocabulary);
    expect(stored?.vocabularySha256).toBe(sha256);
  });
});
