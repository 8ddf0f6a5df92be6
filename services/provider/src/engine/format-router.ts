/**
 * Several engines behind the one Engine the daemon holds, each model served by the one that can:
 * what `engine: auto` builds (cli/engine-factory.ts) when one engine cannot serve every model to
 * serve. A user who puts both GGUF files and MLX checkpoints in the models directory expects both
 * served (GGUF by the native-llama or llama engine, checkpoints by mlx), not a refusal; an embedding
 * GGUF needs an engine that computes embeddings, which the native core does not, so where the GGUF
 * engine is the native core, embedding models go to the llama engine (node-llama-cpp's embedding
 * context). The daemon, the link and the metrics keep seeing a single engine. Each model belongs to
 * the engine of its route: loading, unloading, generating, embedding, its context limit and threads
 * are that engine's; the engine-wide figures are combined.
 */
import {
  type EmbeddingEvent,
  type EmbeddingJob,
  type EmbeddingRequest,
  type Engine,
  type EngineDevice,
  EngineError,
  type EngineObserver,
  type EngineStats,
  type Generation,
  type GenerationRequest,
  type ModelFile,
  type TokenEvent,
} from "./engine.js";

/** Which engine serves which models. */
export interface EngineRoutes {
  /** GGUF files (and any model no other route takes: it refuses what it cannot serve). */
  gguf: Engine;
  /** MLX checkpoint directories. */
  mlx?: Engine | undefined;
  /** Embedding GGUFs (ModelFile.embedding), where the GGUF engine computes no embeddings. */
  embeddings?: Engine | undefined;
}

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
  /** Every backend, e.g. "native-llama+mlx" or "native-llama+llama" (Register's engine_backend is free text). */
  readonly backend: string;
  /** Each model's engine, from its load (ids are unique in the models directory). */
  private readonly owner = new Map<string, Engine>();
  private readonly engines: Engine[];

  constructor(private readonly routes: Readonly<EngineRoutes>) {
    this.engines = [routes.gguf, routes.mlx, routes.embeddings].filter((e): e is Engine => e !== undefined);
    this.backend = this.engines.map((e) => e.backend).join("+");
  }

  /** The engine of a model's route: its format's, an embedding GGUF's where one is routed apart. */
  private engineOf(model: ModelFile): Engine {
    if (model.format === "mlx") return this.routes.mlx ?? this.routes.gguf;
    if (model.embedding !== undefined && this.routes.embeddings) return this.routes.embeddings;
    return this.routes.gguf;
  }

  /**
   * The device they all compute on. Where one of them computes on the CPU, the CPU, GPUs
   * notwithstanding: some model is served on it, which `serve`'s CPU refusal and `doctor` must see.
   */
  async device(): Promise<EngineDevice> {
    const devices = await Promise.all(this.engines.map((e) => e.device()));
    if (devices.some((d) => d.accelerator === "cpu")) return { accelerator: "cpu", gpus: [] };
    const gpus = new Map(devices.flatMap((d) => d.gpus).map((g) => [g.name, g]));
    return { accelerator: devices[0]!.accelerator, gpus: [...gpus.values()] };
  }

  constrains(model: ModelFile): boolean {
    return this.engineOf(model).constrains(model);
  }

  embeds(model: ModelFile): boolean {
    return this.engineOf(model).embeds(model);
  }

  logprobs(model: ModelFile): boolean {
    return this.engineOf(model).logprobs?.(model) ?? false;
  }

  unsupported(model: ModelFile): string | undefined {
    return this.engineOf(model).unsupported?.(model);
  }

  async load(model: ModelFile): Promise<void> {
    const engine = this.engineOf(model);
    const previous = this.owner.get(model.id);
    // The same id on another route now (the file was replaced): the old engine lets it go.
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
    return (this.owner.get(request?.model) ?? this.routes.gguf).generate(request, onToken);
  }

  /**
   * The model's engine embeds; one never loaded goes to an engine that embeds (it fails it
   * model_not_found). Fails invalid_request where the model's engine computes no embeddings.
   */
  embed(request: EmbeddingRequest, onEmbedding?: (event: EmbeddingEvent) => void): EmbeddingJob {
    const engine =
      this.owner.get(request?.model) ?? this.engines.find((e) => e.embed !== undefined) ?? this.routes.gguf;
    if (engine.embed) return engine.embed(request, onEmbedding);
    const refused = new EngineError(
      "invalid_request",
      `the ${engine.backend} engine computes no embeddings (model ${request?.model})`,
      400,
    );
    const done = Promise.reject(refused);
    done.catch(() => {});
    return { done, cancel: () => {} };
  }

  /**
   * Counters summed; the KV-cache usage over all caches; the measured rates the highest (each is a
   * recent moving average of one engine, and one that idles keeps its last value, so a sum would
   * count a stale rate as capacity).
   */
  stats(): EngineStats {
    const all = this.engines.map((e) => e.stats());
    const first = all[0] as EngineStats;
    const out: EngineStats = {
      ...first,
      kvCacheUsage: 0,
      prefillTokensPerSecond: Math.max(...all.map((s) => s.prefillTokensPerSecond)),
      decodeTokensPerSecond: Math.max(...all.map((s) => s.decodeTokensPerSecond)),
      loadedModels: all.flatMap((s) => s.loadedModels),
    };
    for (const key of COUNTERS) out[key] = all.reduce((sum, s) => sum + s[key], 0);
    for (const key of OPTIONAL_COUNTERS) {
      if (all.some((s) => s[key] !== undefined)) out[key] = all.reduce((sum, s) => sum + (s[key] ?? 0), 0);
    }
    const capacity = all.reduce((sum, s) => sum + (s.kvCacheCapacityTokens ?? 0), 0);
    out.kvCacheUsage =
      capacity > 0
        ? all.reduce((sum, s) => sum + (s.kvCacheTokens ?? 0), 0) / capacity
        : Math.max(...all.map((s) => s.kvCacheUsage));
    return out;
  }

  contextLimit(modelId: string): number | undefined {
    return this.owner.get(modelId)?.contextLimit?.(modelId);
  }

  threadsFor(modelId: string): number | undefined {
    return this.owner.get(modelId)?.threadsFor?.(modelId);
  }

  observe(observer: EngineObserver | undefined): void {
    for (const engine of this.engines) engine.observe?.(observer);
  }

  async close(): Promise<void> {
    await Promise.all(this.engines.map((e) => e.close()));
  }
}
