import { spawn } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { resolveConfig } from "../config/config.js";
import { ApplyError, applyRecipe, backupStamp, recipeYaml } from "./apply.js";
import type { Knobs } from "./knobs.js";

const knobs: Knobs = { engine: "llama", kvBits: 8, maxBatch: 4, maxContext: 2048, threads: 2 };
const OLD = "# operator's notes\ncoordinator_url: https://coordinator.example\nkv_bits: 4\nmax_batch: 1\n";

let dir: string;
let config: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "autotune-apply-"));
  config = join(dir, "provider.yaml");
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("--apply", () => {
  it("writes the recipe keeping comments and other keys; serve reads it back", async () => {
    await writeFile(config, OLD);
    const now = new Date("2026-05-18T10:11:12.345Z");
    const result = await applyRecipe(config, "tiny", knobs, { now });
    expect(result.backupPath).toBe(`${config}.bak-20260518T101112Z`);
    expect(await readFile(result.backupPath as string, "utf8")).toBe(OLD);
    const text = await readFile(config, "utf8");
    expect(text).toContain("# operator's notes");
    const { config: read } = resolveConfig({
      configPath: config,
      env: {},
      cwd: dir,
      defaults: { home: dir },
    });
    expect(read).toMatchObject({
      coordinatorUrl: "https://coordinator.example",
      models: ["tiny"],
      kvBits: 8,
      maxBatch: 4,
      maxContext: 2048,
      threads: 2,
    });
    expect((await readdir(dir)).filter((f) => f.includes(".tmp"))).toEqual([]);
  });

  it("never overwrites a backup: the same second gets -1, -2", async () => {
    await writeFile(config, OLD);
    const now = new Date("2026-05-18T10:11:12Z");
    const stamp = backupStamp(now);
    const first = await applyRecipe(config, "tiny", knobs, { now });
    const second = await applyRecipe(config, "tiny", { ...knobs, threads: 1 }, { now });
    const third = await applyRecipe(config, "tiny", { ...knobs, threads: 2 }, { now });
    expect([first.backupPath, second.backupPath, third.backupPath]).toEqual([
      `${config}.bak-${stamp}`,
      `${config}.bak-${stamp}-1`,
      `${config}.bak-${stamp}-2`,
    ]);
    expect(await readFile(first.backupPath as string, "utf8")).toBe(OLD);
    expect(await readFile(second.backupPath as string, "utf8")).toContain("threads: 2");
  });

  it("an unquantized KV cache removes kv_bits; a missing file is created without a backup", async () => {
    const result = await applyRecipe(config, "tiny", { ...knobs, kvBits: undefined });
    expect(result.backupPath).toBeUndefined();
    expect(await readFile(config, "utf8")).not.toContain("kv_bits");
    expect(recipeYaml(OLD, "m", { ...knobs, kvBits: undefined })).not.toContain("kv_bits");
  });

  it("a failed rename leaves the old config byte for byte and no temporary file", async () => {
    await writeFile(config, OLD);
    const failing = applyRecipe(config, "tiny", knobs, {
      rename: async () => {
        throw Object.assign(new Error("simulated"), { code: "EIO" });
      },
    });
    await expect(failing).rejects.toThrow(ApplyError);
    await expect(failing).rejects.toThrow(/unchanged/);
    expect(await readFile(config, "utf8")).toBe(OLD);
    expect((await readdir(dir)).filter((f) => f.includes(".tmp"))).toEqual([]);
  });

  it("a process killed mid-write leaves the old config", async () => {
    await writeFile(config, OLD);
    // The built module (tsc -b runs before the tests), in a child that is SIGKILLed once its
    // temporary file is written and before the rename.
    const applyJs = fileURLToPath(new URL("../../dist/autotune/apply.js", import.meta.url));
    const child = spawn(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        `import { applyRecipe } from ${JSON.stringify(applyJs)};
         await applyRecipe(process.argv[1], "tiny", JSON.parse(process.argv[2]), {
           afterTempWritten: async () => { process.stdout.write("written\\n"); await new Promise(() => {}); setInterval(() => {}, 1000); },
         });`,
        config,
        JSON.stringify(knobs),
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    await new Promise<void>((resolve, reject) => {
      child.stdout.on("data", (d: Buffer) => {
        if (d.toString().includes("written")) resolve();
      });
      child.on("exit", (code) => reject(new Error(`child exited ${code} before writing`)));
    });
    const exited = new Promise((resolve) => child.on("exit", resolve));
    child.kill("SIGKILL");
    await exited;
    expect(await readFile(config, "utf8")).toBe(OLD);
    const { config: read } = resolveConfig({
      configPath: config,
      env: {},
      cwd: dir,
      defaults: { home: dir },
    });
    expect(read.maxBatch).toBe(1);
  });

  it("refuses a file that is not a mapping, leaving it alone", async () => {
    await writeFile(config, "- a\n- b\n");
    await expect(applyRecipe(config, "tiny", knobs)).rejects.toThrow(ApplyError);
    expect(await readFile(config, "utf8")).toBe("- a\n- b\n");
  });
});
