import { readFile } from "node:fs/promises";
import { availableParallelism, cpus, totalmem } from "node:os";
import { join } from "node:path";
import type { Command } from "commander";
import { ApplyError, applyRecipe } from "../autotune/apply.js";
import { CandidateError, parseCandidateList, resolveCandidates } from "../autotune/candidates.js";
import { engineChecks } from "../autotune/engine-probe.js";
import { IntegrityAbort } from "../autotune/feasibility.js";
import { ClimbError } from "../autotune/hill-climb.js";
import {
  AXIS_FLAGS,
  AxisError,
  defaultSearchSpace,
  describeKnobs,
  type Knobs,
  knobsAsYaml,
  parseAxis,
  type SearchSpace,
  snap,
} from "../autotune/knobs.js";
import { fittedStart, MemoryEstimator } from "../autotune/memory-fit.js";
import { formatPlan } from "../autotune/plan.js";
import { type SearchSettings, serveCommandLine } from "../autotune/recipe.js";
import { EngineTrialRunner, type Workload } from "../autotune/trial-runner.js";
import { TRIALS_FILE, TrialStore } from "../autotune/trial-store.js";
import { TuneInterrupted, tune } from "../autotune/tuner.js";
import { BenchFlagError, integerFlag } from "../bench/flags.js";
import { defaultConfigPath, pidFileOf } from "../config/paths.js";
import type { ModelFile } from "../engine/engine.js";
import { chooseThreads } from "../engine/threads.js";
import { detectTopology } from "../machine/topology.js";
import { ServiceError, type ServiceManager } from "../service/index.js";
import { AlreadyRunningError, acquirePidFile, type PidFile } from "../service/pid-file.js";
import type { CliContext } from "./context.js";
import { CliFailure, UsageError } from "./io.js";
import { stepBar } from "./progress.js";
import { addSettingOptions, resolveFromOptions } from "./settings-options.js";

/** Exit statuses of `autotune` besides 0, 1, 64 and 130. */
export const AUTOTUNE_EXIT = {
  /** No candidate passed the feasibility gate (each one's reason is printed). */
  noCandidate: 2,
  /** A candidate's file failed its integrity check; the run stopped there. */
  integrity: 3,
} as const;

const DEFAULTS = {
  promptTokens: 128,
  genTokens: 32,
  trialSeconds: 10,
  // Three, so that the median is one trial's figure: with two it is their mean, and one disturbed
  // trial (a 22 tok/s among 39-41) flipped a comparison of the Qwen3-0.6B shape's batch widths.
  replicates: 3,
  budget: 36,
  tieEpsilon: 0.02,
  gateTtftMs: 10_000,
  gateTps: 1,
};
/** The share of memory `serve` gives its models (engine-factory.ts): what a candidate must fit. */
const MEMORY_SHARE = 0.6;

/**
 * `autotune`: stage 1 picks the biggest candidate model that passes the feasibility gate, stage 2
 * hill-climbs its serving knobs; trials are recorded in the data directory (a re-run resumes) and the
 * result is a recipe with a deterministic hash, which `--apply` writes into the config file.
 */
export function addAutotuneCommand(program: Command, context: CliContext): void {
  const command = program
    .command("autotune")
    .description("choose the biggest model this machine serves well and tune its knobs (no network)");
  addSettingOptions(command, ["dataDir", "kvBits", "maxBatch", "maxContext", "threads"]);
  command
    .option("--candidate-models <ids>", "models to try, in this order (default: every model, largest first)")
    .option("--target-batch <n>", "rows decoded together in each trial (default: --max-batch)")
    .option("--prompt-tokens <n>", `prompt length per row (default ${DEFAULTS.promptTokens})`)
    .option("--gen-tokens <n>", `tokens generated per row (default ${DEFAULTS.genTokens})`)
    .option("--trial-seconds <s>", `how long each trial repeats its batch (default ${DEFAULTS.trialSeconds})`)
    .option("--replicates <n>", `trials per knob set; the median counts (default ${DEFAULTS.replicates})`)
    .option("--budget <n>", `most stage-2 trials (default ${DEFAULTS.budget})`)
    .option(
      "--tie-epsilon <x>",
      `relative decode-rate difference that is a tie (default ${DEFAULTS.tieEpsilon})`,
    )
    .option("--gate-ttft-ms <ms>", `stage-1 gate: largest TTFT (default ${DEFAULTS.gateTtftMs})`)
    .option("--gate-tps <x>", `stage-1 gate: smallest decode tokens/s (default ${DEFAULTS.gateTps})`)
    .option("--memory-budget <bytes>", "memory a model may take, e.g. 6GiB (default 60% of memory)")
    .option(`${AXIS_FLAGS.kvBits} <list>`, "KV bits to try, e.g. off,8,4 (default off,8,4)")
    .option(`${AXIS_FLAGS.maxBatch} <list>`, "batch widths to try (default 1,2,4,… up to twice the target)")
    .option(`${AXIS_FLAGS.maxContext} <list>`, "context caps to try (default: --max-context only)")
    .option(`${AXIS_FLAGS.threads} <list>`, "thread counts to try (default 1,2,4,… up to the cores)")
    .option("--fresh", "ignore trials recorded by earlier runs")
    .option("--dry-run", "print the plan and exit")
    .option("--apply", "write the recipe to the config file and restart the service if it runs")
    .option("--json", "print JSON")
    .action(async (opts: Record<string, unknown>) => {
      const plan = await prepare(opts, context);
      if (opts.dryRun) {
        if (opts.json) {
          context.io.stdout(
            `${JSON.stringify(
              {
                candidates: plan.candidates.map((c) => c.id),
                workload: plan.workload,
                start: knobsAsYaml(plan.start),
                axes: { ...plan.space, kvBits: plan.space.kvBits.map((b) => b ?? null) },
                replicates: plan.replicates,
                budget: plan.budget,
              },
              null,
              2,
            )}\n`,
          );
        } else context.io.stdout(formatPlan({ ...plan, apply: opts.apply ? plan.configPath : undefined }));
        return;
      }
      await execute(plan, opts, context);
    });
}

interface Prepared extends SearchSettings {
  /** The config leaves threads to the engine ("auto"): each candidate starts from its own count. */
  autoThreads: boolean;
  dataDir: string;
  configPath: string;
  candidates: Awaited<ReturnType<typeof resolveCandidates>>;
  operatorOrder: boolean;
  cpuCount: number;
  totalMemoryBytes: number;
  storePath: string;
  recordedTrials: number;
}

async function prepare(opts: Record<string, unknown>, context: CliContext): Promise<Prepared> {
  const { config } = resolveFromOptions(opts, context);
  const cpuCount = context.defaults?.cpuCount ?? availableParallelism();
  const totalMemoryBytes = context.defaults?.totalMemoryBytes ?? totalmem();
  let workload: Workload;
  let replicates: number;
  let budget: number;
  try {
    workload = {
      promptTokens: integerFlag("--prompt-tokens", opts.promptTokens, DEFAULTS.promptTokens, 1, 1_000_000),
      genTokens: integerFlag("--gen-tokens", opts.genTokens, DEFAULTS.genTokens, 2, 1_000_000),
      batch: integerFlag("--target-batch", opts.targetBatch, config.maxBatch, 1, 4096),
      trialSeconds: decimalFlag("--trial-seconds", opts.trialSeconds, DEFAULTS.trialSeconds, 0, 3600, false),
    };
    replicates = integerFlag("--replicates", opts.replicates, DEFAULTS.replicates, 1, 100);
    budget = integerFlag("--budget", opts.budget, DEFAULTS.budget, 1, 100_000);
  } catch (error) {
    if (error instanceof BenchFlagError) throw new UsageError(error.message);
    throw error;
  }
  if (budget < replicates)
    throw new UsageError(`--budget (${budget}) must be at least --replicates (${replicates})`);
  const tieEpsilon = decimalFlag("--tie-epsilon", opts.tieEpsilon, DEFAULTS.tieEpsilon, 0, 1, true);
  const gate = {
    maxTtftMs: decimalFlag("--gate-ttft-ms", opts.gateTtftMs, DEFAULTS.gateTtftMs, 0, 3_600_000, false),
    minDecodeTokensPerSecond: decimalFlag("--gate-tps", opts.gateTps, DEFAULTS.gateTps, 0, 1e9, true),
  };
  const memoryBudgetBytes =
    opts.memoryBudget === undefined
      ? Math.floor(totalMemoryBytes * MEMORY_SHARE)
      : sizeFlag("--memory-budget", opts.memoryBudget);

  const threads = typeof config.threads === "number" ? config.threads : cpuCount;
  const base: Knobs = {
    engine: "llama",
    kvBits: config.kvBits,
    maxBatch: workload.batch,
    maxContext: config.maxContext,
    threads,
  };
  const space = { ...defaultSearchSpace(base, cpuCount, workload.batch) } as {
    -readonly [K in keyof SearchSpace]: SearchSpace[K];
  };
  const ctx = { baseDir: context.cwd, home: context.defaults?.home ?? context.io.env.HOME ?? "/" };
  try {
    if (typeof opts.kvBitsAxis === "string") space.kvBits = parseAxis("kvBits", opts.kvBitsAxis, ctx);
    if (typeof opts.maxBatchAxis === "string") space.maxBatch = parseAxis("maxBatch", opts.maxBatchAxis, ctx);
    if (typeof opts.maxContextAxis === "string")
      space.maxContext = parseAxis("maxContext", opts.maxContextAxis, ctx);
    if (typeof opts.threadsAxis === "string") space.threads = parseAxis("threads", opts.threadsAxis, ctx);
  } catch (error) {
    if (error instanceof AxisError) throw new UsageError(error.message);
    throw error;
  }
  const needed = workload.promptTokens + workload.genTokens + 64;
  for (const cell of space.maxContext) {
    if (cell < needed) {
      throw new UsageError(
        `max context ${cell} is below the workload's ${workload.promptTokens} prompt + ${workload.genTokens} generated tokens (+64); raise it or shorten the workload`,
      );
    }
  }
  const start: Knobs = {
    engine: space.engine[0] ?? "llama",
    kvBits: snap(space.kvBits, base.kvBits),
    maxBatch: snap(space.maxBatch, base.maxBatch),
    maxContext: snap(space.maxContext, base.maxContext),
    threads: snap(space.threads, base.threads),
  };

  let operator: string[] | undefined;
  try {
    if (typeof opts.candidateModels === "string") operator = parseCandidateList(opts.candidateModels);
  } catch (error) {
    if (error instanceof CandidateError) throw new UsageError(error.message);
    throw error;
  }
  let candidates: Prepared["candidates"];
  try {
    candidates = await resolveCandidates(config.modelsDir, operator);
  } catch (error) {
    if (error instanceof CandidateError) throw new UsageError(error.message);
    throw error;
  }
  const previous = opts.fresh ? 0 : await countRecorded(config.dataDir);
  return {
    dataDir: config.dataDir,
    configPath: config.configFile ?? defaultConfigPath(ctx.home),
    candidates,
    operatorOrder: operator !== undefined,
    workload,
    gate,
    space,
    start,
    autoThreads: typeof config.threads !== "number",
    replicates,
    budget,
    tieEpsilon,
    memoryBudgetBytes,
    cpuCount,
    totalMemoryBytes,
    storePath: join(config.dataDir, TRIALS_FILE),
    recordedTrials: previous,
  };
}

async function countRecorded(dataDir: string): Promise<number> {
  const text = await readFile(join(dataDir, TRIALS_FILE), "utf8").catch(() => "");
  return text.split("\n").filter((l) => l.trim() !== "").length;
}

async function execute(plan: Prepared, opts: Record<string, unknown>, context: CliContext): Promise<void> {
  const { io } = context;
  const say = (line: string) => io.stderr(`darkbloom: autotune: ${line}\n`);
  // One daemon per data directory: autotune holds the PID file while it measures, so a daemon
  // cannot start beside it and skew the figures; a service that runs is drained first.
  let stoppedService: ServiceManager | undefined;
  let pidFile: PidFile;
  try {
    pidFile = await acquirePidFile(pidFileOf(plan.dataDir));
  } catch (error) {
    if (!(error instanceof AlreadyRunningError)) throw error;
    const service = await runningService(context);
    if (!service) {
      throw new CliFailure(
        `${error.message.replace(/; stop it first.*$/, "")}; stop it first: trials beside a serving daemon would measure both`,
      );
    }
    say(`stopping ${service.name} for the measurements (it drains first)`);
    try {
      await service.stop();
      pidFile = await acquirePidFile(pidFileOf(plan.dataDir));
    } catch (stopError) {
      if (stopError instanceof ServiceError || stopError instanceof AlreadyRunningError)
        throw new CliFailure(stopError.message);
      throw stopError;
    }
    stoppedService = service;
  }
  let stopping = false;
  void io.shutdownSignal().then(() => {
    stopping = true;
  });
  const store = await TrialStore.open(plan.dataDir, { fresh: Boolean(opts.fresh) });
  const bar = stepBar(io.stderr, io.stderrIsTty);
  let applied: { configPath: string; backupPath: string | undefined } | undefined;
  let failure: CliFailure | undefined;
  let output: string | undefined;
  try {
    const [{ getLlama, LlamaLogLevel }, { LlamaEngine }, { ModelValidator }] = await Promise.all([
      import("node-llama-cpp"),
      import("../engine/llama/llama-engine.js"),
      import("../engine/llama/model-validator.js"),
    ]);
    let llama: ReturnType<typeof getLlama> | undefined;
    // Read once, and only when the config leaves threads to the engine.
    let detected: ReturnType<typeof detectTopology> | undefined;
    const topology = () => {
      detected ??= detectTopology();
      return detected;
    };
    const estimator = new MemoryEstimator(() => {
      llama ??= getLlama({ gpu: false, build: "never", skipDownload: true, logLevel: LlamaLogLevel.error });
      return llama;
    });
    const validator = new ModelValidator();
    const machine = {
      platform: context.platform,
      arch: context.arch,
      cpuModel: cpus()[0]?.model.trim() ?? "unknown",
      cpuCount: plan.cpuCount,
      totalMemoryBytes: plan.totalMemoryBytes,
    };
    const runnerFor = (model: ModelFile) =>
      new EngineTrialRunner(model, plan.workload, {
        estimator,
        memoryBudgetBytes: plan.memoryBudgetBytes,
        batchTimeoutMs: Math.max(60_000, plan.workload.trialSeconds * 4000),
        createEngine: (knobs) =>
          new LlamaEngine({
            maxBatch: knobs.maxBatch,
            maxContext: knobs.maxContext,
            kvBits: knobs.kvBits,
            threads: knobs.threads,
            memoryBudgetBytes: plan.memoryBudgetBytes,
            idleTimeoutMinutes: 0,
            gpu: "auto",
            validator,
            onLog: (level, message) => {
              if (level === "error") say(`engine: ${message}`);
            },
          }),
      });
    say(
      `${plan.candidates.length} candidate${plan.candidates.length === 1 ? "" : "s"}: ${plan.candidates.map((c) => c.id).join(", ")}; trials in ${store.path}`,
    );
    const result = await tune({
      ...plan,
      machine,
      store,
      checks: (probe) =>
        engineChecks({
          estimator,
          memoryBudgetBytes: plan.memoryBudgetBytes,
          validator,
          probe,
        }),
      objective: (model) => runnerFor(model),
      // Where serve would start with this model: threads "auto" resolved for it (engine/threads.ts),
      // and a context that does not fit lowered (as at load), not a reason to skip the model.
      startFor: async (model, start) =>
        fittedStart(
          estimator,
          model,
          plan.autoThreads
            ? {
                ...start,
                threads: chooseThreads({
                  modelBytes: model.sizeBytes,
                  topology: await topology(),
                }).threads,
              }
            : start,
          plan.memoryBudgetBytes,
          plan.workload.promptTokens + plan.workload.genTokens,
        ),
      stopping: () => stopping,
      onEvent: (event) => {
        if (event.kind === "candidate") {
          bar.update(event.index, event.total, `stage 1: ${event.model}`);
        } else if (event.kind === "verdict") {
          bar.done();
          say(
            `stage 1: ${event.model}: ${event.exitReason === "ok" ? "passes the gate" : `${event.exitReason}: ${event.reason ?? ""}`}`,
          );
        } else if (event.stage === 2) {
          const f = event.outcome.figures;
          const figures = f
            ? `${f.decodeTokensPerSecond.toFixed(1)} tokens/s, TTFT ${Math.round(f.ttftMs)} ms`
            : `${event.outcome.exitReason}: ${event.outcome.reason ?? ""}`;
          bar.update(event.done, event.budget, `stage 2: ${describeKnobs(event.knobs)}`);
          if (!io.stderrIsTty)
            say(`stage 2: ${describeKnobs(event.knobs)}: ${figures}${event.reused ? " (recorded)" : ""}`);
        }
      },
    });
    bar.done();
    const { stage1, climb, recipe } = result;
    if (!stage1.chosen) {
      const reasons = stage1.verdicts.map(
        (v) => `${v.model}: ${v.exitReason}${v.reason ? ` (${v.reason})` : ""}`,
      );
      throw new CliFailure(
        `no candidate passed the feasibility gate: ${reasons.join("; ")}`,
        AUTOTUNE_EXIT.noCandidate,
      );
    }
    if (!climb || !recipe) {
      throw new CliFailure(
        `${stage1.chosen.id} passed the gate but no knob set could be measured (${climb?.best.reason ?? "no trials"})`,
      );
    }
    const best = climb.best;
    const serveCommand = serveCommandLine(stage1.chosen.id, best.knobs);
    if (opts.apply) {
      try {
        applied = await applyRecipe(plan.configPath, stage1.chosen.id, best.knobs, {
          defaults: context.defaults,
        });
      } catch (error) {
        if (error instanceof ApplyError) throw new CliFailure(error.message);
        throw error;
      }
    }
    const summary = {
      recipe_hash: recipe.hash,
      model: stage1.chosen.id,
      knobs: recipe.domain.knobs,
      serve_command: serveCommand,
      alternates: stage1.alternates,
      figures: { decode_tokens_per_second: best.decodeTokensPerSecond, ttft_ms: best.ttftMs ?? null },
      stage1: stage1.verdicts.map((v) => ({
        model: v.model,
        exit_reason: v.exitReason,
        reason: v.reason ?? null,
      })),
      stage2: { trials: climb.trials, converged: climb.converged },
      trials: { run: result.trialsRun, reused: result.trialsReused, store: store.path },
      run_id: result.runId,
      applied: applied ? { config: applied.configPath, backup: applied.backupPath ?? null } : null,
      recipe: recipe.domain,
    };
    if (opts.json) output = `${JSON.stringify(summary, null, 2)}\n`;
    else {
      output =
        `model: ${stage1.chosen.id}${stage1.alternates.length > 0 ? ` (alternates, not probed: ${stage1.alternates.join(", ")})` : ""}\n` +
        `knobs: ${describeKnobs(best.knobs)}\n` +
        `measured: ${best.decodeTokensPerSecond.toFixed(1)} decode tokens/s at batch ${plan.workload.batch}, TTFT ${best.ttftMs === undefined ? "n/a" : `${Math.round(best.ttftMs)} ms`}\n` +
        `stage 2: ${climb.trials} trials${climb.converged ? ", converged" : ", budget reached"}; ${result.trialsReused} reused from earlier runs\n` +
        `recipe_hash: ${recipe.hash}\n` +
        `serve: ${serveCommand}\n` +
        (applied
          ? `applied to ${applied.configPath}${applied.backupPath ? ` (previous one kept as ${applied.backupPath})` : ""}\n`
          : `apply it with --apply (writes ${plan.configPath})\n`);
    }
  } catch (error) {
    bar.done();
    if (error instanceof IntegrityAbort) {
      failure = new CliFailure(
        `integrity: ${error.model}: ${error.reason}; the run is aborted (remove or replace the file)`,
        AUTOTUNE_EXIT.integrity,
      );
    } else if (error instanceof TuneInterrupted) {
      failure = new CliFailure(
        `interrupted; ${store.appended.length} trials recorded, run again to resume`,
        130,
      );
    } else if (error instanceof ClimbError) {
      failure = new CliFailure(error.message);
    } else if (error instanceof CliFailure) {
      failure = error;
    } else throw error;
  } finally {
    await store.close();
    await pidFile.release();
  }
  // After the PID file is free, so that the service's daemon can take it.
  const restart = stoppedService ?? (applied ? await runningService(context) : undefined);
  if (restart) {
    try {
      await restart.restart();
      say(`restarted ${restart.name}${applied ? " with the new config" : ""}`);
    } catch (error) {
      if (error instanceof ServiceError)
        failure ??= new CliFailure(`${error.message}; start it with darkbloom start`);
      else throw error;
    }
  }
  if (failure) throw failure;
  if (output) io.stdout(output);
}

/** The platform's service when it is running; undefined when there is none or none runs. */
async function runningService(context: CliContext): Promise<ServiceManager | undefined> {
  try {
    const service = context.serviceManager();
    return (await service.status()).running ? service : undefined;
  } catch {
    return undefined;
  }
}

function decimalFlag(
  flag: string,
  raw: unknown,
  fallback: number,
  min: number,
  max: number,
  minInclusive: boolean,
): number {
  if (raw === undefined) return fallback;
  const text = String(raw).trim();
  const n = Number(text);
  if (!/^\d+(\.\d+)?$/.test(text) || !(minInclusive ? n >= min : n > min) || n > max) {
    throw new UsageError(
      `${flag} must be a number ${minInclusive ? "from" : "above"} ${min}${minInclusive ? ` to ${max}` : ` up to ${max}`} (got ${JSON.stringify(text)})`,
    );
  }
  return n;
}

const SIZE_UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
};

function sizeFlag(flag: string, raw: unknown): number {
  const text = String(raw).trim();
  const match = /^(\d+(?:\.\d+)?)\s*([KMGT]iB|B)?$/i.exec(text);
  const unit = SIZE_UNITS[(match?.[2] ?? "").toLowerCase()];
  const bytes = match && unit ? Math.floor(Number(match[1]) * unit) : Number.NaN;
  if (!(bytes >= 1024 * 1024)) {
    throw new UsageError(
      `${flag} must be a size of at least 1MiB such as 6GiB or 512MiB (got ${JSON.stringify(text)})`,
    );
  }
  return bytes;
}
