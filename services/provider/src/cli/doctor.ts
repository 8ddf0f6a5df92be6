import { freemem, totalmem } from "node:os";
import type { Command } from "commander";
import type { ProviderConfig } from "../config/config.js";
import { scanModels } from "../config/model-inventory.js";
import { pidFileOf } from "../config/paths.js";
import { type EngineDevice, EngineError, type ModelFile } from "../engine/engine.js";
import { machineAccelerator } from "../machine/hardware.js";
import { detectTopology } from "../machine/topology.js";
import { processAlive, readPidFile } from "../service/pid-file.js";
import type { CliContext } from "./context.js";
import { createLogger } from "./context.js";
import { CliFailure } from "./io.js";
import { formatBytes } from "./progress.js";
import { addSettingOptions, resolveFromOptions } from "./settings-options.js";
import { findDaemons, listProcesses, threadsCheck } from "./threads-check.js";
import { tpmCheck } from "./tpm-check.js";

export interface CheckResult {
  name: string;
  ok: boolean;
  detail: string;
  /** What to do about a failure or a warning. */
  fix?: string;
  /** Passes, but with a problem worth a WARN line (exit status unaffected). */
  warn?: boolean;
}

/** Clock skew beyond this fails (attestation challenges carry timestamps). */
const MAX_SKEW_MS = 10_000;
const HTTP_TIMEOUT_MS = 5_000;

/** `doctor`: checks the machine, the engine, the models and the coordinator; exit 1 if any check fails. */
export function addDoctorCommand(program: Command, context: CliContext): void {
  const command = program
    .command("doctor")
    .description("check that this machine can serve (exit 1 if a check fails)");
  addSettingOptions(command);
  command.action(async (opts: Record<string, unknown>) => {
    const { config } = resolveFromOptions(opts, context);
    const results = await runChecks(config, context);
    const width = Math.max(...results.map((r) => r.name.length));
    for (const r of results) {
      const fix = (!r.ok || r.warn) && r.fix ? ` (fix: ${r.fix})` : "";
      const verdict = !r.ok ? "FAIL" : r.warn ? "WARN" : "PASS";
      context.io.stdout(`${verdict}  ${r.name.padEnd(width)}  ${r.detail}${fix}\n`);
    }
    const failed = results.filter((r) => !r.ok).length;
    if (failed > 0) throw new CliFailure(`${failed} check${failed === 1 ? "" : "s"} failed`);
  });
}

export async function runChecks(config: ProviderConfig, context: CliContext): Promise<CheckResult[]> {
  const results: CheckResult[] = [platformCheck(context)];
  const { served, check: modelsCheck } = await modelsChecks(config);
  const engine = await engineCheck(config, served, context);
  results.push(
    accelerationCheck(context, engine.device, config.allowCpu),
    engine.result,
    modelsCheck,
    memoryCheck(served),
    await threadsCheckOf(config, served, context),
  );
  if (context.platform === "linux") results.push(await tpmCheck(config.tpm));
  results.push(...(await coordinatorChecks(config, context)));
  return results;
}

function platformCheck(context: CliContext): CheckResult {
  const [major = 0, minor = 0] = process.versions.node.split(".").map(Number);
  const nodeOk = major > 20 || (major === 20 && minor >= 10);
  const platformOk = context.platform === "darwin" || context.platform === "linux";
  return {
    name: "platform",
    ok: nodeOk && platformOk,
    detail: `${context.platform} ${context.arch}, Node ${process.version}`,
    fix: !platformOk ? "run the provider on macOS or Linux" : "install Node.js 20.10 or newer",
  };
}

/**
 * The device the engine reports against the machine's: a GPU the engine does not use fails (node-
 * llama-cpp falls back to the CPU without a word when its GPU binaries are missing), and the CPU
 * warns unless --allow-cpu, without which `serve` refuses to join.
 */
function accelerationCheck(
  context: CliContext,
  device: EngineDevice | undefined,
  allowCpu: boolean,
): CheckResult {
  const expected = machineAccelerator(context.platform, context.arch);
  const name = "accelerator";
  if (device === undefined) {
    // The engine check fails for it: not counted twice.
    return { name, ok: true, warn: true, detail: `${expected} on this machine; the engine did not start` };
  }
  const { accelerator, gpus } = device;
  if (accelerator !== "cpu") {
    const listed = gpus.map((g) => `${g.name} (${formatBytes(g.memoryBytes)})`).join(", ");
    return { name, ok: true, detail: `${accelerator}${listed ? `: ${listed}` : ""}` };
  }
  if (expected !== "cpu") {
    return {
      name,
      ok: false,
      detail: `this machine has ${expected} but the engine computes on the CPU`,
      fix:
        expected === "cuda"
          ? "npm run install:gpu -- cuda (node-llama-cpp's CUDA binaries; npm ci installs stand-ins); " +
            "for --engine native, the CUDA toolkit with cuBLAS, then npm run build:native"
          : "reinstall (npm ci) so node-llama-cpp's Metal binary is present",
    };
  }
  return allowCpu
    ? { name, ok: true, detail: "cpu (no GPU on this machine; --allow-cpu)" }
    : {
        name,
        ok: true,
        warn: true,
        detail: "cpu (no GPU on this machine): serve refuses to join the network on the CPU",
        fix: "--allow-cpu (DARKBLOOM_ALLOW_CPU=1) to serve anyway, slowly",
      };
}

/** What to do when the engine cannot start or load: build MLX's addon, or mend node-llama-cpp. */
const ENGINE_FIXES = {
  mlx: "build the MLX addon: DARKBLOOM_MLX_DIR=<an MLX installation> npm run build:native",
  llama: "reinstall (npm ci) so node-llama-cpp's prebuilt binaries are present",
};

/**
 * Starts the engine `serve` would choose and loads the smallest served model of each format it
 * serves (an MLX checkpoint through the mlx engine, a GGUF file through its GGUF engine); a served
 * model of a format the engine does not load fails the check with the engine's reason.
 */
async function engineCheck(
  config: ProviderConfig,
  served: ModelFile[],
  context: CliContext,
): Promise<{ result: CheckResult; device: EngineDevice | undefined }> {
  const log = createLogger("silent");
  const mlxWanted = config.engine === "mlx" || served.some((m) => m.format === "mlx");
  let engine: Awaited<ReturnType<CliContext["createEngine"]>>;
  try {
    engine = await context.createEngine(config, log);
  } catch (error) {
    const message = (error as Error).message;
    return {
      result: {
        name: "engine",
        ok: false,
        detail: `cannot start: ${message}`,
        fix: mlxWanted && /\bmlx\b/i.test(message) ? ENGINE_FIXES.mlx : ENGINE_FIXES.llama,
      },
      device: undefined,
    };
  }
  const device = await engine.device().catch(() => undefined);
  try {
    const refused = served.flatMap((m) => engine.unsupported?.(m) ?? []);
    const smallest = new Map<string, ModelFile>();
    for (const model of [...served].sort((a, b) => a.sizeBytes - b.sizeBytes)) {
      const format = model.format ?? "gguf";
      if (!smallest.has(format) && engine.unsupported?.(model) === undefined) smallest.set(format, model);
    }
    if (smallest.size === 0 && refused.length === 0)
      return {
        result: { name: "engine", ok: true, detail: `${engine.backend} starts (no model to load)` },
        device,
      };
    const loaded: string[] = [];
    for (const model of smallest.values()) {
      const started = performance.now();
      try {
        await engine.load(model);
      } catch (error) {
        const mlx = model.format === "mlx";
        const addon = error instanceof EngineError && error.code === "engine_failed";
        return {
          result: {
            name: "engine",
            ok: false,
            detail: `${engine.backend} cannot load ${model.id}: ${(error as Error).message}`,
            fix: addon
              ? mlx
                ? ENGINE_FIXES.mlx
                : ENGINE_FIXES.llama
              : "check the model file (darkbloom models list) or re-download it",
          },
          device,
        };
      }
      const ms = Math.round(performance.now() - started);
      loaded.push(`${model.id}${smallest.size > 1 ? ` (${model.format ?? "gguf"})` : ""} in ${ms} ms`);
    }
    const loads = loaded.length > 0 ? [`${engine.backend} loads ${loaded.join(", ")}`] : [];
    if (refused.length > 0)
      return {
        result: {
          name: "engine",
          ok: false,
          detail: [...loads, ...refused].join("; "),
          fix: "--engine auto serves each model with the engine of its format",
        },
        device,
      };
    return { result: { name: "engine", ok: true, detail: loads.join("") }, device };
  } finally {
    await engine.close().catch(() => undefined);
  }
}

async function modelsChecks(config: ProviderConfig): Promise<{ served: ModelFile[]; check: CheckResult }> {
  const { models, problems } = await scanModels(config.modelsDir);
  const byId = new Map(models.map((m) => [m.id, m]));
  const missing = config.models.filter((id) => !byId.has(id));
  const served = config.models.length > 0 ? config.models.flatMap((id) => byId.get(id) ?? []) : models;
  const listed = served.map((m) => `${m.id} (${m.quantization}, ${formatBytes(m.sizeBytes)})`).join(", ");
  if (served.length === 0 || missing.length > 0 || problems.length > 0) {
    const parts: string[] = [];
    if (models.length === 0) parts.push(`no models in ${config.modelsDir}`);
    if (missing.length > 0) parts.push(`configured but missing: ${missing.join(", ")}`);
    for (const p of problems) parts.push(`${p.file} is not valid: ${p.error}`);
    return {
      served,
      check: {
        name: "models",
        ok: false,
        detail: parts.join("; "),
        fix:
          problems.length > 0
            ? "remove or re-download the broken files (darkbloom models remove <id>)"
            : "darkbloom models synth tiny, or darkbloom models download <url>",
      },
    };
  }
  return { served, check: { name: "models", ok: true, detail: listed } };
}

function memoryCheck(served: ModelFile[]): CheckResult {
  const total = totalmem();
  const free = freemem();
  const need = served.reduce((sum, m) => sum + m.sizeBytes, 0);
  const ok = need <= total * 0.8;
  return {
    name: "memory",
    ok,
    detail: `${formatBytes(total)} total, ${formatBytes(free)} available; the models need ${formatBytes(need)}`,
    fix: "serve fewer or smaller models (--model), or a smaller quantization",
  };
}

/** Engine threads against the physical cores, every darkbloom daemon on the machine counted. */
async function threadsCheckOf(
  config: ProviderConfig,
  served: ModelFile[],
  context: CliContext,
): Promise<CheckResult> {
  const topology = await (context.cpuTopology ?? detectTopology)();
  const processes = await (context.processes ?? listProcesses)();
  const ownPid = await readPidFile(pidFileOf(config.dataDir));
  const result = threadsCheck({
    configured: config.threads,
    served,
    topology,
    running: processes && findDaemons(processes, process.pid),
    ownPid: ownPid !== undefined && processAlive(ownPid) ? ownPid : undefined,
  });
  return { name: "threads", ...result };
}

async function coordinatorChecks(config: ProviderConfig, context: CliContext): Promise<CheckResult[]> {
  const url = `${config.coordinatorUrl}/healthz`;
  const fix = "start the coordinator or point --coordinator / DARKBLOOM_COORDINATOR_URL at it";
  const sent = Date.now();
  let response: Response;
  try {
    response = await context.fetch(url, { signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) });
    await response.arrayBuffer().catch(() => undefined);
  } catch (error) {
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    const why = cause?.code ?? cause?.message ?? (error as Error).message;
    return [
      { name: "coordinator", ok: false, detail: `${url} unreachable (${why})`, fix },
      { name: "clock", ok: false, detail: "not checked: the coordinator is unreachable", fix },
    ];
  }
  const received = Date.now();
  const results: CheckResult[] = [
    {
      name: "coordinator",
      ok: response.ok,
      detail: `${url} answered ${response.status} in ${received - sent} ms`,
      fix,
    },
  ];
  const date = response.headers.get("date");
  const serverMs = date ? Date.parse(date) : Number.NaN;
  if (Number.isNaN(serverMs)) {
    results.push({
      name: "clock",
      ok: false,
      detail: "the coordinator sent no Date header",
      fix: "upgrade the coordinator",
    });
  } else {
    // The Date header has one-second resolution: compare with the middle of the request, allow for it.
    const skew = (sent + received) / 2 - (serverMs + 500);
    const ok = Math.abs(skew) <= MAX_SKEW_MS;
    results.push({
      name: "clock",
      ok,
      detail: `${Math.abs(skew) < 1000 ? "within 1 s of" : `${(Math.abs(skew) / 1000).toFixed(1)} s ${skew > 0 ? "ahead of" : "behind"}`} the coordinator`,
      fix: "enable time synchronisation (macOS: System Settings > Date & Time; Linux: timedatectl set-ntp true)",
    });
  }
  return results;
}
