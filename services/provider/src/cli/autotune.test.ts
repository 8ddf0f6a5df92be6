import { copyFile, mkdir, mkdtemp, open, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ServiceManager, ServiceSpec, ServiceStatus } from "../service/index.js";
import { ScriptedEngine } from "../testing/scripted-engine.js";
import { AUTOTUNE_EXIT } from "./autotune.js";
import type { CliDeps } from "./context.js";
import { runCli } from "./program.js";
import { testIo } from "./test-io.js";

const MIB = 1024 ** 2;

let home: string;
let dataDir: string;
beforeAll(async () => {
  home = await mkdtemp(join(tmpdir(), "darkbloom-autotune-"));
  dataDir = join(home, "data");
  // Three real-architecture models of different sizes: tiny-f16 (largest) > tiny-llama > tiny.
  for (const argv of [["tiny"], ["tiny-llama"], ["tiny", "--quant", "F16", "--name", "tiny-f16"]]) {
    const t = testIo();
    expect(
      await runCli(["models", "synth", ...argv, "--data-dir", dataDir], t.io, { defaults: { home } }),
    ).toBe(0);
  }
}, 60_000);
afterAll(async () => {
  await rm(home, { recursive: true, force: true });
});

class FakeService implements ServiceManager {
  readonly kind = "systemd";
  readonly name = "darkbloom-provider.service";
  readonly definitionPath = "/fake/darkbloom-provider.service";
  restarts = 0;
  stops = 0;
  constructor(private readonly running: boolean) {}
  render(): string {
    return "";
  }
  async start(_spec: ServiceSpec): Promise<void> {}
  async stop(): Promise<void> {
    this.stops++;
  }
  async restart(): Promise<void> {
    this.restarts++;
  }
  async status(): Promise<ServiceStatus> {
    return { installed: true, loaded: true, running: this.running, pid: undefined, detail: "" };
  }
}

async function run(argv: string[], extra: Partial<CliDeps> = {}) {
  const t = testIo();
  const code = await runCli(argv, t.io, {
    defaults: { home, totalMemoryBytes: 8 * 1024 ** 3, cpuCount: 2 },
    cwd: home,
    serviceManager: () => {
      throw new Error("no service manager in this test");
    },
    ...extra,
  });
  return { code, stdout: t.stdout(), stderr: t.stderr() };
}

/** A small, fast workload: one thread (two spin against each other on this 2-core box). */
const FAST = [
  "--max-context",
  "512",
  "--max-batch",
  "2",
  "--prompt-tokens",
  "32",
  "--gen-tokens",
  "16",
  "--trial-seconds",
  "0.1",
  "--replicates",
  "1",
  "--threads-axis",
  "1",
  "--max-batch-axis",
  "1,2",
  "--kv-bits-axis",
  "off,8",
];

describe("darkbloom autotune: usage", () => {
  it.each([
    [["--candidate-models", "tiny,,tiny-llama"], /--candidate-models has an empty cell/],
    [["--candidate-models", "tiny,tiny"], /lists tiny twice/],
    [["--candidate-models", "nope"], /nope is not in/],
    [["--max-batch-axis", "1,,2"], /--max-batch-axis has an empty cell/],
    [["--kv-bits-axis", "3"], /must be 4 or 8/],
    [["--threads-axis", "0"], /--threads-axis cell "0"/],
    [["--max-context-axis", "64"], /max context 64 is below the workload/],
    [["--trial-seconds", "0"], /--trial-seconds must be a number above 0/],
    [["--replicates", "3", "--budget", "2"], /--budget \(2\) must be at least --replicates \(3\)/],
    [["--tie-epsilon", "2"], /--tie-epsilon/],
    [["--memory-budget", "lots"], /--memory-budget must be a size/],
    [["--kv-bits", "7"], /--kv-bits must be 4 or 8/],
  ])("%j is exit 64 with one line", async (flags, message) => {
    const r = await run(["autotune", "--data-dir", dataDir, ...flags]);
    expect(r.code).toBe(64);
    expect(r.stderr).toMatch(message);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
  });

  it("--dry-run prints the plan in order: largest first, or the operator's order untouched", async () => {
    const plan = await run(["autotune", "--data-dir", dataDir, "--dry-run", ...FAST]);
    expect(plan.code).toBe(0);
    const order = [...plan.stdout.matchAll(/^ {2}\d\. (\S+)/gm)].map((m) => m[1]);
    expect(order).toEqual(["tiny-f16", "tiny-llama", "tiny"]);
    expect(plan.stdout.indexOf("stage 1")).toBeLessThan(plan.stdout.indexOf("stage 2"));
    expect(plan.stdout).toMatch(/kv_bits: off, 8/);
    const operator = await run([
      "autotune",
      "--data-dir",
      dataDir,
      "--dry-run",
      "--candidate-models",
      "tiny,tiny-f16",
      ...FAST,
    ]);
    expect([...operator.stdout.matchAll(/^ {2}\d\. (\S+)/gm)].map((m) => m[1])).toEqual(["tiny", "tiny-f16"]);
    expect(operator.stdout).toContain("in the order given");
  });
});

describe("darkbloom autotune on synthesized models", () => {
  it("stage 1 skips what cannot fit and stops at the first fit; stage 2 tunes; --apply writes; a re-run resumes", async () => {
    const config = join(home, "provider.yaml");
    await writeFile(config, "# mine\nlog_level: warn\n");
    // 4.5 MiB: tiny-f16 needs ~4.6 MiB with an unquantized cache at 2 rows of 512 tokens; tiny-llama ~4.3.
    const argv = [
      "autotune",
      "--data-dir",
      dataDir,
      "--config",
      config,
      "--memory-budget",
      `${4.5 * MIB}`,
      "--budget",
      "5",
      "--json",
      ...FAST,
    ];
    const service = new FakeService(true);
    const first = await run([...argv, "--apply"], { serviceManager: () => service });
    expect(first.stderr).not.toMatch(/darkbloom: (?!autotune)/);
    expect(first.code).toBe(0);
    const out = JSON.parse(first.stdout);
    expect(out.model).toBe("tiny-llama");
    expect(out.alternates).toEqual(["tiny"]);
    expect(out.stage1.map((v: { model: string; exit_reason: string }) => [v.model, v.exit_reason])).toEqual([
      ["tiny-f16", "oom"],
      ["tiny-llama", "ok"],
    ]);
    expect(out.stage1[0].reason).toMatch(/does not fit/);
    expect(out.recipe_hash).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(Object.keys(out.knobs).sort()).toEqual([
      "engine",
      "kv_bits",
      "max_batch",
      "max_context",
      "threads",
    ]);
    expect(out.knobs.threads).toBe(1);
    expect(out.serve_command).toMatch(/^darkbloom serve --model tiny-llama .*--threads 1$/);
    expect(out.stage2.trials).toBeLessThanOrEqual(5);
    expect(out.trials.run).toBeGreaterThan(1);
    expect(out.recipe.model.id).toBe("tiny-llama");
    expect(JSON.stringify(out.recipe)).not.toMatch(/run_id|decode_tokens|"at"/);
    // Applied: the config names the model and knobs; the old file is kept; the service restarted.
    const yaml = await readFile(config, "utf8");
    expect(yaml).toContain("# mine");
    expect(yaml).toMatch(/models:\n {2}- tiny-llama/);
    expect(yaml).toContain(`max_batch: ${out.knobs.max_batch}`);
    expect(await readFile(out.applied.backup, "utf8")).toBe("# mine\nlog_level: warn\n");
    expect(service.restarts).toBe(1);
    // Every trial is on file, each with an exit reason of the fixed set.
    const lines = (await readFile(out.trials.store, "utf8"))
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(lines.filter((l) => l.stage === 1).map((l) => [l.model, l.exitReason])).toEqual([
      ["tiny-f16", "oom"],
      ["tiny-llama", "ok"],
    ]);
    expect(lines.filter((l) => l.stage === 2).length).toBe(out.stage2.trials);

    // The same machine and inputs again (the config as it was: the applied one changes the start):
    // nothing is measured, and the recipe hash is the same.
    await writeFile(config, "# mine\nlog_level: warn\n");
    const again = await run(argv);
    expect(again.code).toBe(0);
    const second = JSON.parse(again.stdout);
    expect(second.trials, again.stderr).toMatchObject({ run: 0 });
    expect(second.trials.reused).toBe(out.stage2.trials + 1);
    expect(second.recipe_hash).toBe(out.recipe_hash);
    expect(second.run_id).not.toBe(out.run_id);
  }, 60_000);

  it.each([
    ["truncated (the inventory cannot read it)", "truncate"],
    ["with garbage weights (the child-process load refuses it)", "garbage"],
  ])(
    "a corrupt candidate, %s, aborts the run as an integrity failure (exit 3)",
    async (_what, how) => {
      const broken = join(home, `broken-${how}`);
      await mkdir(join(broken, "models"), { recursive: true });
      const file = join(broken, "models", "broken.gguf");
      await copyFile(join(dataDir, "models", "tiny.gguf"), file);
      await copyFile(join(dataDir, "models", "tiny.gguf"), join(broken, "models", "tiny.gguf"));
      if (how === "truncate") await truncate(file, 300_000);
      else {
        // Header intact, the last tensors' bytes all 0xff (NaNs): only loading it finds out.
        const handle = await open(file, "r+");
        await handle.write(Buffer.alloc(20_000, 0xff), 0, 20_000, 480_000);
        await handle.close();
      }
      const r = await run(["autotune", "--data-dir", broken, "--candidate-models", "broken,tiny", ...FAST]);
      expect(r.code).toBe(AUTOTUNE_EXIT.integrity);
      expect(r.stderr).toMatch(/darkbloom: integrity: broken: .*aborted/);
      const lines = (await readFile(join(broken, "autotune", "trials.jsonl"), "utf8")).trim().split("\n");
      expect(lines.map((l) => [JSON.parse(l).model, JSON.parse(l).exitReason])).toEqual([
        ["broken", "integrity"],
      ]);
    },
    30_000,
  );

  it("no candidate passing the gate is exit 2 with each one's reason", async () => {
    const r = await run([
      "autotune",
      "--data-dir",
      dataDir,
      "--candidate-models",
      "tiny",
      "--gate-tps",
      "1000000000",
      "--fresh",
      ...FAST,
    ]);
    expect(r.code).toBe(AUTOTUNE_EXIT.noCandidate);
    expect(r.stderr).toMatch(
      /no candidate passed the feasibility gate: tiny: gate_failed \(.*below the gate/,
    );
  }, 30_000);
});

describe("darkbloom serve --no-join", () => {
  it("serves the local engine and the health listener without dialling the coordinator", async () => {
    const local = join(home, "no-join");
    await mkdir(join(local, "models"), { recursive: true });
    await copyFile(join(dataDir, "models", "tiny.gguf"), join(local, "models", "tiny.gguf"));
    const engine = new ScriptedEngine();
    const t = testIo();
    const serving = runCli(
      [
        "serve",
        "--no-join",
        "--data-dir",
        local,
        "--log-level",
        "silent",
        "--metrics-listen",
        "127.0.0.1:0",
        // A plain-http coordinator elsewhere is refused when joining; unused, it does not matter.
        "--coordinator",
        "http://192.0.2.1:9",
      ],
      t.io,
      { defaults: { home }, cwd: home, createEngine: async () => engine },
    );
    let url: string | undefined;
    for (let i = 0; i < 200 && !url; i++) {
      url = /(http:\/\/127\.0\.0\.1:\d+)\/healthz/.exec(t.stdout())?.[1];
      if (!url) await new Promise((r) => setTimeout(r, 25));
    }
    expect(t.stdout() + t.stderr()).toMatch(/serving tiny locally without joining the network/);
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).toMatch(/darkbloom_provider_coordinator_connected(\{[^}]*\})? 0/);
    t.signal("SIGTERM");
    expect(await serving).toBe(0);
    expect(engine.closed).toBe(true);
    // Nothing of the network was touched: no attestation key was made.
    await expect(readFile(join(local, "keys", "attestation.pem"))).rejects.toThrow();
  });
});
