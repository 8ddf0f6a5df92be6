import { totalmem } from "node:os";
import { join } from "node:path";
import type { Logger } from "pino";
import type { ProviderConfig } from "../config/config.js";
import { modelFormats, servesEmbeddingModels } from "../config/model-inventory.js";
import type { AcceleratorName, Engine, ModelFormat } from "../engine/engine.js";
import type { EngineRoutes } from "../engine/format-router.js";
import { LlamaEngine, type LlamaEngineOptions } from "../engine/llama/llama-engine.js";
import { machineAccelerator } from "../machine/hardware.js";
import { UsageError } from "./io.js";

/** Share of the machine's memory the served models may take, weights and contexts together. */
const MEMORY_SHARE = 0.6;

/** What the choice depends on besides the settings (tests give their own). */
export interface EngineChoiceDeps {
  /**
   * What @darkbloom/native/llama's addon computes on here: "cpu", "cuda" for a CUDA build whose
   * runtime finds a GPU, "metal" for a Mac's Metal build; undefined where it does not load.
   */
  nativeAccelerator?: () => Promise<AcceleratorName | undefined>;
  /** Why @darkbloom/native/mlx's addon does not load here (what to do), or undefined when it does. */
  mlxUnavailable?: () => Promise<string | undefined>;
  /** The machine's GPU (machineAccelerator). */
  accelerator?: () => AcceleratorName;
  /** The formats of the models to serve (default: read from the models directory's names). */
  modelFormats?: () => Promise<Set<ModelFormat>>;
  /** Whether a GGUF to serve is an embedding model (default: read from their headers). */
  embeddingModels?: () => Promise<boolean>;
}

/** The one line `--engine mlx` (or auto with only checkpoints to serve) stops with where MLX is missing. */
export const mlxNotBuilt = (reason: string) => `the mlx engine is not built on this machine (${reason})`;

/**
 * The engine `serve` and `doctor` use, by the `engine` setting (flag > DARKBLOOM_ENGINE > config):
 * - "llama": llama.cpp through node-llama-cpp, on the GPU when the prebuilt binaries find one;
 * - "native": the project's batching core (@darkbloom/native/llama: the CPU, and NVIDIA GPUs where it
 *   was built with CUDA, Apple silicon's with Metal);
 * - "mlx": MLX checkpoints through @darkbloom/native/mlx (Metal on Apple silicon);
 * - "auto": by the formats of the models to serve. MLX checkpoints are served by mlx (no other engine
 *   loads them); GGUF files by native when its addon loads and computes on the machine's accelerator
 *   (the CPU on a machine without a GPU, CUDA on an NVIDIA machine where it was built with CUDA, Metal
 *   on Apple silicon), else by llama (node-llama-cpp's GPU binaries on a GPU machine).
 *   Both kinds together: one engine of each behind a FormatRouterEngine. The native core computes no
 *   embeddings: where it serves the GGUF files and one of them is an embedding model, embedding
 *   models go to a llama engine beside it (FormatRouterEngine's embeddings route), the others stay
 *   on the native core. An addon that does not load
 *   falls back with one warning line: the GGUF engine for GGUF files; checkpoints then cannot be
 *   served, and the daemon refuses each with one line (a usage error when nothing else is left).
 * "native" and "mlx" without their addon are usage errors (exit 64). A model of the format the chosen
 * engine does not serve is refused per model (Engine.unsupported). Imported lazily so that other
 * commands load none of the engines. Each model's context is lowered to fit its share of 60% of the
 * machine's memory.
 */
export async function createDefaultEngine(
  config: ProviderConfig,
  logger: Logger,
  deps: EngineChoiceDeps = {},
): Promise<Engine> {
  const options: Omit<LlamaEngineOptions, "onLog"> = {
    maxBatch: config.maxBatch,
    maxContext: config.maxContext,
    kvBits: config.kvBits,
    threads: config.threads,
    memoryBudgetBytes: Math.floor((totalmem() * MEMORY_SHARE) / Math.max(1, config.models.length)),
    idleTimeoutMinutes: config.idleTimeoutMinutes,
    gpu: "auto",
  };
  const mlxUnavailable = deps.mlxUnavailable ?? mlxAddonUnavailable;
  const mlxEngine = async (): Promise<Engine> => {
    const { MlxEngine } = await import("../engine/mlx/mlx-engine.js");
    const log = logger.child({ engine: "mlx" });
    const { gpu: _gpu, ...rest } = options;
    return new MlxEngine({
      ...rest,
      vocabularyCacheDir: join(config.dataDir, "vocabularies"),
      onLog: (level, message) => log[level](message),
    });
  };
  if (config.engine === "mlx") {
    const reason = await mlxUnavailable();
    if (reason !== undefined) throw new UsageError(mlxNotBuilt(reason));
    return mlxEngine();
  }
  if (config.engine !== "auto") return ggufEngine(config, options, logger, deps);

  const formats = await (deps.modelFormats ?? (() => modelFormats(config.modelsDir, config.models)))();
  if (!formats.has("mlx")) return routed(await ggufEngines(config, options, logger, deps));
  const reason = await mlxUnavailable();
  if (!formats.has("gguf")) {
    // Nothing to fall back to: every model to serve is a checkpoint.
    if (reason !== undefined)
      throw new UsageError(`${mlxNotBuilt(reason)}, and the models are MLX checkpoints`);
    return mlxEngine();
  }
  if (reason !== undefined) {
    logger.warn(`${mlxNotBuilt(reason)}: the MLX checkpoints cannot be served, the GGUF models are`);
    return routed(await ggufEngines(config, options, logger, deps));
  }
  return routed({ ...(await ggufEngines(config, options, logger, deps)), mlx: await mlxEngine() });
}

/** One engine, or several behind a FormatRouterEngine when more than the GGUF route is taken. */
async function routed(routes: EngineRoutes): Promise<Engine> {
  if (!routes.mlx && !routes.embeddings) return routes.gguf;
  const { FormatRouterEngine } = await import("../engine/format-router.js");
  return new FormatRouterEngine(routes);
}

/**
 * auto's engines for GGUF files: ggufEngine's, and where it computes no embeddings (the native core)
 * while an embedding model is to be served, a llama engine for the embedding models.
 */
async function ggufEngines(
  config: ProviderConfig,
  options: Omit<LlamaEngineOptions, "onLog">,
  logger: Logger,
  deps: EngineChoiceDeps,
): Promise<Pick<EngineRoutes, "gguf" | "embeddings">> {
  const gguf = await ggufEngine(config, options, logger, deps);
  if (gguf.embed !== undefined) return { gguf };
  const embeddingModels =
    deps.embeddingModels ?? (() => servesEmbeddingModels(config.modelsDir, config.models));
  if (!(await embeddingModels())) return { gguf };
  return { gguf, embeddings: llamaEngine(options, logger) };
}

/**
 * The engine for GGUF files: "llama", "native", or for "auto" native where its addon computes on the
 * machine's accelerator. A CPU build on a GPU machine is passed over without a word: node-llama-cpp's
 * GPU binaries serve there (npm run install:gpu), faster than any CPU.
 */
async function ggufEngine(
  config: ProviderConfig,
  options: Omit<LlamaEngineOptions, "onLog">,
  logger: Logger,
  deps: EngineChoiceDeps,
): Promise<Engine> {
  if (config.engine === "native" || config.engine === "auto") {
    const machine = (deps.accelerator ?? machineAccelerator)();
    const native = await (deps.nativeAccelerator ?? nativeAddonAccelerator)();
    if (native !== undefined && (config.engine === "native" || native === machine)) {
      const { NativeEngine } = await import("../engine/native/native-engine.js");
      const log = logger.child({ engine: "native-llama" });
      return new NativeEngine({ ...options, onLog: (level, message) => log[level](message) });
    }
    if (config.engine === "native")
      throw new UsageError(
        "--engine native needs the llama addon, which is not built here: run npm run build:native",
      );
    if (native === undefined && machine === "cpu")
      logger.warn(
        "the native llama addon is not built (npm run build:native): using the llama engine (node-llama-cpp)",
      );
  }
  return llamaEngine(options, logger);
}

function llamaEngine(options: Omit<LlamaEngineOptions, "onLog">, logger: Logger): LlamaEngine {
  const log = logger.child({ engine: "llama" });
  return new LlamaEngine({ ...options, onLog: (level, message) => log[level](message) });
}

async function nativeAddonAccelerator(): Promise<AcceleratorName | undefined> {
  const { llamaHardware } = await import("@darkbloom/native/llama");
  const hardware = llamaHardware();
  if (!hardware) return undefined;
  const { nativeDevice } = await import("../engine/native/gpu-placement.js");
  return nativeDevice(hardware).accelerator;
}

async function mlxAddonUnavailable(): Promise<string | undefined> {
  const { mlxUnavailableReason } = await import("@darkbloom/native/mlx");
  return mlxUnavailableReason();
}
