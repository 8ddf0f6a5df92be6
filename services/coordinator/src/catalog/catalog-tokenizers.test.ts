import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { synthesizeModel, writeVocabularyFile } from "@darkbloom/models";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../log.js";
import { CatalogTokenizers } from "./catalog-tokenizers.js";
import type { CatalogModel } from "./model-catalog.js";

let dir: string;
let bytes: Uint8Array;
let sha: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "darkbloom-catalog-tokenizers-"));
  await synthesizeModel({ shape: "tiny", seed: 4, outPath: join(dir, "tiny.gguf") });
  await writeVocabularyFile(join(dir, "tiny.gguf"), join(dir, "tiny.vocab.gguf"));
  bytes = await readFile(join(dir, "tiny.vocab.gguf"));
  sha = createHash("sha256").update(bytes).digest("hex");
}, 60_000);

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

const model = (id: string, vocabularySha256: string | undefined): CatalogModel => ({
  id,
  displayName: id,
  ownedBy: "",
  inputMicroUsdPerMillion: 1n,
  outputMicroUsdPerMillion: 1n,
  enabled: true,
  vocabularySha256,
  embeddingMinDimensions: undefined,
  createdAt: new Date(),
  updatedAt: new Date(),
});

describe.each([
  { threads: 0, where: "on the event loop" },
  { threads: 1, where: "in a worker thread" },
])("CatalogTokenizers counting $where", ({ threads }) => {
  it("loads a vocabulary once for every model that names it, and keeps a retired one usable", async () => {
    const reads: string[] = [];
    const tokenizers = new CatalogTokenizers(
      {
        read: async (s) => {
          reads.push(s);
          return bytes;
        },
      },
      createLogger("silent"),
      { threads },
    );
    try {
      await tokenizers.sync([model("a", sha), model("b", sha), model("c", undefined)]);
      expect(reads).toEqual([sha]);
      const a = tokenizers.get("a");
      expect(a).toBeDefined();
      expect(tokenizers.get("b")).toBe(a);
      expect(tokenizers.get("c")).toBeUndefined();
      const two = await a?.countTexts(["hello world", "hello world"]);
      expect(two).toBe(2 * ((await a?.countTexts(["hello world"])) ?? 0));
      expect(two).toBeGreaterThan(0);
      expect(
        await a?.countPrompt({ kind: "chat", messages: [{ role: "user", content: "hi" }] }),
      ).toBeGreaterThan(1);
      // No model uses it any more: no longer handed out, but a request counted with it still counts.
      await tokenizers.sync([model("a", undefined)]);
      expect(tokenizers.get("a")).toBeUndefined();
      expect(await a?.countTexts(["hello world"])).toBeGreaterThan(0);
    } finally {
      await tokenizers.close();
    }
  });

  it("leaves a model bounded when its stored bytes do not match the hash, and retries a failed read", async () => {
    let failRead = true;
    const source = {
      read: async (s: string) => {
        if (s !== sha) return new Uint8Array([1, 2, 3]);
        if (failRead) throw new Error("connection refused");
        return bytes;
      },
    };
    const tokenizers = new CatalogTokenizers(source, createLogger("silent"), { threads });
    try {
      const models = [model("bad", "f".repeat(64)), model("good", sha)];
      await tokenizers.sync(models);
      expect(tokenizers.get("bad")).toBeUndefined();
      expect(tokenizers.get("good")).toBeUndefined();
      failRead = false;
      await tokenizers.sync(models);
      expect(tokenizers.get("bad")).toBeUndefined();
      expect(tokenizers.get("good")).toBeDefined();
    } finally {
      await tokenizers.close();
    }
  });

  it("counts with the exact port in front of llama.cpp, and falls back to llama.cpp for good once they differ", async () => {
    const tokenizers = new CatalogTokenizers({ read: async () => bytes }, createLogger("silent"), {
      threads,
    });
    try {
      await tokenizers.sync([model("a", sha)]);
      const port = tokenizers.get("a");
      const reference = port?.reference;
      expect(reference).toBeDefined();
      const input = {
        kind: "chat" as const,
        messages: [{ role: "user" as const, content: "Count to three 🙂" }],
      };
      const texts = ["One, two, three.", " <|im_end|> and 'tis done\n\n"];
      // Past an audit (one count in 1,024 is compared with llama.cpp), which finds no difference.
      for (let i = 0; i < 520; i++) {
        expect(await port?.countPrompt(input)).toBe(await reference?.counter.countPrompt(input));
        expect(await port?.countTexts(texts)).toBe(await reference?.counter.countTexts(texts));
      }
      expect(tokenizers.get("a")).toBe(port);
      reference?.differed("a test says so");
      const after = tokenizers.get("a");
      expect(after).toBe(reference?.counter);
      expect(after?.reference).toBeUndefined();
    } finally {
      await tokenizers.close();
    }
  });
});
