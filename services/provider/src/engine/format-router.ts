/**
 * One engine per model format behind the one Engine the daemon holds: what `engine: auto` serves when
 * the models to serve are GGUF files and MLX checkpoints together (cli/engine-factory.ts). A user who
 * puts both kinds in the models directory expects both served, each by the engine that can (GGUF by
 * the native-llama or llama engine, checkpoints by mlx), not a refusal; the daemon, the link and the
 * metrics keep seeing a single engine. Each model belongs to the engine of its format: loading,
 * unloading, generating, its context limit and threads are that engine's; the engine-wide figures
 * are combined.
 */
import type {
  Engine,
  EngineDevice,
  EngineObserver,
  EngineStats,
  Generation,
  GenerationRequest,
  ModelFile,
  ModelFormat,
  TokenEvent,
} from "./engine.js";

const COUNTERS = [
  "busySlots",
  "queueDepth",
  "requestsCompleted",
  "requestsFailed",
  "tokensGenerated",
] as const;
const OPTIONAL_COUNTERS = [
  "totalSlots",
  "kvCacheTokens",
  "kvCacheCapacityTokens",
  "promptTokensProcessed",
  "prefillSeconds",
  "decodeSeconds",
  "decodeSteps",
] as const;

export class FormatRouterEngine implements Engine {
  /** Both backends, e.g. "native-llama+mlx" (Register's engine_backend is free text). */
  readonly backend: string;
  /** Each model's engine, from its load (ids are unique in the models directory). */
  private readonly owner = new Map<string, Engine>();

  constructor(private readonly engines: Readonly<Record<ModelFormat, Engine>>) {
    this.backend = `${engines.gguf.backend}+${engines.mlx.backend}`;
  }

  private engineOf(model: ModelFile): Engine {
    return this.engines[model.format ?? "gguf"];
  }

  /**
   * The device both compute on. Where one of them computes on the CPU, the CPU, GPUs notwithstanding:
   * some model is served on it, which `serve`'s CPU refusal and `doctor` must see.
   */
  async device(): Promise<EngineDevice> {
    const devices = await Promise.all([this.engines.gguf.device(), this.engines.mlx.device()]);
    if (devices.some((d) => d.accelerator === "cpu")) return { accelerator: "cpu", gpus: [] };
    const gpus = new Map(devices.flatMap((d) => d.gpus).map((g) => [g.name, g]));
    return { accelerator: devices[0]!.accelerator, gpus: [...gpus.values()] };
  }

  constrains(model: ModelFile): boolean {
    return this.engineOf(model).constrains(model);
  }

  unsupported(model: ModelFile): string | undefined {
    return this.engineOf(model).unsupported?.(model);
  }

  async load(model: ModelFile): Promise<void> {
    const engine = this.engineOf(model);
    const previous = this.owner.get(model.id);
    // The same id in another format now (the file was replaced): the old engine lets it go.
    if (previous && previous !== engine) await previous.unload(model.id);
    this.owner.set(model.id, engine);
    await engine.load(model);
  }

  async unload(modelId: string): Promise<void> {
    const engine = this.owner.get(modelId);
    this.owner.delete(modelId);
    await engine?.unload(modelId);
  }

  /** A model never loaded goes to the GGUF engine, which fails it model_not_found like any engine. */
  generate(request: GenerationRequest, onToken: (event: TokenEvent) => void): Generation {
    return (this.owner.get(request?.model) ?? this.engines.gguf).generate(request, onToken);
  }

  /**
   * Counters summed; the KV-cache usage over both caches; the measured rates the higher of the two
   * (each is a recent moving average of one engine, and one that idles keeps its last value, so a sum
   * would count a stale rate as capacity).
   */
  stats(): EngineStats {
    const a = this.engines.gguf.stats();
    const b = this.engines.mlx.stats();
    const out: EngineStats = {
      ...a,
      kvCacheUsage: 0,
      prefillTokensPerSecond: Math.max(a.prefillTokensPerSecond, b.prefillTokensPerSecond),
      decodeTokensPerSecond: Math.max(a.decodeTokensPerSecond, b.decodeTokensPerSecond),
      loadedModels: [...a.loadedModels, ...b.loadedModels],
    };
    for (const key of COUNTERS) out[key] = a[key] + b[key];
    for (const key of OPTIONAL_COUNTERS) {
      if (a[key] !== undefined || b[key] !== undefined) out[key] = (a[key] ?? 0) + (b[key] ?? 0);
    }
    const capacity = (a.kvCacheCapacityTokens ?? 0) + (b.kvCacheCapacityTokens ?? 0);
    out.kvCacheUsage =
      capacity > 0
        ? ((a.kvCacheTokens ?? 0) + (b.kvCacheTokens ?? 0)) / capacity
        : Math.max(a.kvCacheUsage, b.kvCacheUsage);
    return out;
  }

  contextLimit(modelId: string): number | undefined {
    return this.owner.get(modelId)?.contextLimit?.(modelId);
  }

  threadsFor(modelId: string): number | undefined {
    return this.owner.get(modelId)?.threadsFor?.(modelId);
  }

  observe(observer: EngineObserver | undefined): void {
    this.engines.gguf.observe?.(observer);
    this.engines.mlx.observe?.(observer);
  }

  async close(): Promise<void> {
    await Promise.all([this.engines.gguf.close(), this.engines.mlx.close()]);
  }
}
