import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { resolveConfig } from "../config/config.js";
import type { Engine } from "../engine/engine.js";
import { LlamaEngine } from "../engine/llama/llama-engine.js";
import { NativeEngine } from "../engine/native/native-engine.js";
import { createDefaultEngine } from "./engine-factory.js";
import { UsageError } from "./io.js";

let home: string;
beforeAll(async () => {
  home = await mkdtemp(join(tmpdir(), "darkbloom-engine-choice-"));
});
afterAll(async () => {
  await rm(home, { recursive: true, force: true });
});

/** A logger whose warnings the test reads. */
function recordingLogger() {
  const warnings: string[] = [];
  const logger = pino(
    { level: "warn" },
    {
      write: (line: string) => {
        warnings.push((JSON.parse(line) as { msg: string }).msg);
      },
    },
  );
  return { logger, warnings };
}

async function choose(engine: string, nativeAvailable: boolean, accelerator: "cpu" | "cuda" | "metal") {
  const defaults = { home, totalMemoryBytes: 8 * 2 ** 30, cpuCount: 2 };
  const { config } = resolveConfig({ flags: { engine }, env: {}, cwd: home, defaults });
  const { logger, warnings } = recordingLogger();
  const chosen: Engine = await createDefaultEngine(config, logger, {
    nativeAvailable: async () => nativeAvailable,
    accelerator: () => accelerator,
  });
  await chosen.close();
  return { chosen, warnings };
}

describe("the engine setting", () => {
  it("auto: the native core on a machine without a GPU when its addon loads", async () => {
    const { chosen, warnings } = await choose("auto", true, "cpu");
    expect(chosen).toBeInstanceOf(NativeEngine);
    expect(warnings).toEqual([]);
  });

  it("auto: node-llama-cpp on a machine with a GPU (the native core is built for the CPU)", async () => {
    for (const gpu of ["cuda", "metal"] as const) {
      const { chosen, warnings } = await choose("auto", true, gpu);
      expect(chosen).toBeInstanceOf(LlamaEngine);
      expect(warnings).toEqual([]);
    }
  });

  it("auto: node-llama-cpp with one warning when the addon is not built", async () => {
    const { chosen, warnings } = await choose("auto", false, "cpu");
    expect(chosen).toBeInstanceOf(LlamaEngine);
    expect(warnings).toEqual([
      "the native llama addon is not built (npm run build:native): using the llama engine (node-llama-cpp)",
    ]);
  });

  it("native without the addon is a usage error; llama is node-llama-cpp whatever is built", async () => {
    await expect(choose("native", false, "cpu")).rejects.toBeInstanceOf(UsageError);
    await expect(choose("native", false, "cpu")).rejects.toThrow("run npm run build:native");
    expect((await choose("native", true, "cuda")).chosen).toBeInstanceOf(NativeEngine);
    expect((await choose("llama", true, "cpu")).chosen).toBeInstanceOf(LlamaEngine);
  });
});
