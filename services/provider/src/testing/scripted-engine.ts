import { createHash } from "node:crypto";
import {
  type EmbeddingEvent,
  type EmbeddingJob,
  type EmbeddingRequest,
  type EmbeddingResult,
  type Engine,
  type EngineDevice,
  EngineError,
  type EngineObserver,
  type EngineStats,
  type Generation,
  type GenerationRequest,
  type GenerationResult,
  type ModelFile,
  type TokenEvent,
} from "../engine/engine.js";

export interface ScriptedEngineOptions {
  /** Batch rows; more generations wait in a queue. Default 4. */
  maxBatch?: number;
  /** Prompt "tokens" (whitespace-separated words) + maxTokens above this: context_length_exceeded. Default 4096. */
  maxContext?: number;
  /** Delay before each token (0: one event-loop turn). Default 0. */
  tokenIntervalMs?: number;
  /** Tokens a generation produces before it stops on its own (finish reason "stop"). Default 16. */
  tokensPerGeneration?: number;
  /** The text of token i of a generation. Default `tok${i} `. */
  token?: (index: number, request: GenerationRequest) => string;
  /** Model ids whose load() fails with model_load_failed. */
  failLoad?: string[];
  /** Reported rates. */
  prefillTokensPerSecond?: number;
  decodeTokensPerSecond?: number;
  backend?: string;
  /** The device it says it computes on (default: the CPU, no GPU). */
  device?: EngineDevice;
  /**
   * Whether it claims to enforce grammars (default false). Its tokens follow `token` regardless, so
   * claiming it plays a provider whose structured output is not what was asked for.
   */
  constrains?: boolean;
  /**
   * The models it treats as embedding models: embeds() says so and embed() gives each input a unit
   * vector of `embeddingDimensions` (default 8) derived from its text, one input per token interval,
   * counted one token per word plus one (an end token). Others are refused as a real engine does.
   */
  embeddingModels?: string[];
  embeddingDimensions?: number;
}

interface Running {
  request: GenerationRequest;
  onToken: (event: TokenEvent) => void;
  resolve: (result: GenerationResult) => void;
  reject: (error: unknown) => void;
  produced: number;
  text: string;
  timer: NodeJS.Timeout | NodeJS.Immediate | undefined;
  started: boolean;
  settled: boolean;
  promptTokens: number;
}

/**
 * A deterministic Engine that follows the contract without a model: it emits scripted tokens on a
 * timer. The link tests and the daemon tests run on it; the real engine lives in engine/llama.
 */
export class ScriptedEngine implements Engine {
  readonly backend: string;
  readonly submitted: GenerationRequest[] = [];
  readonly embedded: EmbeddingRequest[] = [];
  readonly cancelled: string[] = [];
  readonly loads: string[] = [];
  readonly unloads: string[] = [];
  closed = false;

  private readonly options: ScriptedEngineOptions;
  private readonly loaded = new Set<string>();
  private readonly known = new Map<string, ModelFile>();
  private readonly running = new Map<string, Running>();
  private readonly queue: Running[] = [];
  private readonly embedding = new Set<EmbeddingJob>();
  private completed = 0;
  private failed = 0;
  private tokens = 0;
  private promptTokens = 0;
  private observer: EngineObserver | undefined;

  constructor(options: ScriptedEngineOptions = {}) {
    this.options = options;
    this.backend = options.backend ?? "scripted";
  }

  async device(): Promise<EngineDevice> {
    return this.options.device ?? { accelerator: "cpu", gpus: [] };
  }

  /** Ids of the generations running or queued now. */
  get activeIds(): string[] {
    return [...this.running.keys(), ...this.queue.map((r) => r.request.id)];
  }

  async load(model: ModelFile): Promise<void> {
    this.loads.push(model.id);
    // As the llama engine: loading a loaded model is a no-op, and is not reported as a load.
    const reload = this.loaded.has(model.id);
    const started = performance.now();
    await new Promise((r) => setTimeout(r, 5));
    const report = (outcome: "loaded" | "failed") => {
      if (!reload)
        this.observer?.modelLoad({ model: model.id, outcome, seconds: (performance.now() - started) / 1000 });
    };
    if (this.options.failLoad?.includes(model.id)) {
      report("failed");
      throw new EngineError("model_load_failed", `cannot load ${model.id}: scripted failure`, 500);
    }
    this.known.set(model.id, model);
    this.loaded.add(model.id);
    report("loaded");
  }

  observe(observer: EngineObserver | undefined): void {
    this.observer = observer;
  }

  /** Forgets the model, as the llama engine does: generate() fails with model_not_found until load() again. */
  async unload(modelId: string): Promise<void> {
    this.unloads.push(modelId);
    this.loaded.delete(modelId);
    this.known.delete(modelId);
  }

  constrains(_model: ModelFile): boolean {
    return this.options.constrains ?? false;
  }

  embeds(model: ModelFile): boolean {
    return this.options.embeddingModels?.includes(model.id) ?? false;
  }

  /** Each input's scripted vector, one per token interval; cancel() stops before the next input. */
  embed(request: EmbeddingRequest, onEmbedding?: (event: EmbeddingEvent) => void): EmbeddingJob {
    let timer: NodeJS.Timeout | NodeJS.Immediate | undefined;
    let settled = false;
    let resolveDone!: (result: EmbeddingResult) => void;
    let rejectDone!: (error: unknown) => void;
    const done = new Promise<EmbeddingResult>((resolve, reject) => {
      resolveDone = resolve;
      rejectDone = reject;
    });
    done.catch(() => {});
    const stop = (error: EngineError) => {
      if (settled) return;
      settled = true;
      this.embedding.delete(job);
      if (timer) {
        clearTimeout(timer as NodeJS.Timeout);
        clearImmediate(timer as NodeJS.Immediate);
      }
      if (error.code === "cancelled") this.cancelled.push(request.id);
      else this.failed++;
      rejectDone(error);
    };
    const job: EmbeddingJob = {
      done,
      cancel: () => stop(new EngineError("cancelled", "the embeddings were cancelled", 503)),
    };
    const dimensions = this.options.embeddingDimensions ?? 8;
    if (this.closed) stop(new EngineError("engine_failed", "engine is closed", 500));
    else if (!this.known.has(request.model))
      stop(new EngineError("model_not_found", `model ${request.model} is not loaded`, 404));
    else if (!this.options.embeddingModels?.includes(request.model))
      stop(new EngineError("invalid_request", `model ${request.model} is not an embedding model`, 400));
    else if (request.dimensions !== undefined && request.dimensions !== dimensions)
      stop(new EngineError("invalid_request", `'dimensions' must be ${dimensions}`, 400));
    if (settled) return job;
    this.embedding.add(job);
    this.embedded.push(request);
    const result: EmbeddingResult = { embeddings: [], promptTokens: [] };
    const interval = this.options.tokenIntervalMs ?? 0;
    const step = () => {
      timer = undefined;
      if (settled) return;
      const input = request.inputs[result.embeddings.length];
      if (input === undefined) {
        settled = true;
        this.embedding.delete(job);
        this.completed++;
        resolveDone(result);
        return;
      }
      const tokens = input.text.split(/\s+/).filter((w) => w !== "").length + 1;
      const vector = scriptedVector(input.text, dimensions);
      onEmbedding?.({ index: result.embeddings.length, vector, tokens });
      result.embeddings.push(vector);
      result.promptTokens.push(tokens);
      this.promptTokens += tokens;
      timer = interval > 0 ? setTimeout(step, interval) : setImmediate(step);
    };
    timer = interval > 0 ? setTimeout(step, interval) : setImmediate(step);
    return job;
  }

  generate(request: GenerationRequest, onToken: (event: TokenEvent) => void): Generation {
    if (this.closed) throw new EngineError("engine_failed", "engine is closed", 500);
    if (
      request.sampling.grammar !== undefined &&
      !this.constrains(this.known.get(request.model) as ModelFile)
    ) {
      throw new EngineError(
        "invalid_request",
        "the scripted engine cannot constrain output to a grammar",
        400,
      );
    }
    if (!this.known.has(request.model)) {
      throw new EngineError("model_not_found", `model ${request.model} is not loaded`, 404);
    }
    this.submitted.push(request);
    this.loaded.add(request.model);
    const promptTokens = countPromptTokens(request);
    let resolve!: (r: GenerationResult) => void;
    let reject!: (e: unknown) => void;
    const done = new Promise<GenerationResult>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const run: Running = {
      request,
      onToken,
      resolve,
      reject,
      produced: 0,
      text: "",
      timer: undefined,
      started: false,
      settled: false,
      promptTokens,
    };
    const limit = this.options.maxContext ?? 4096;
    if (promptTokens + request.sampling.maxTokens > limit) {
      this.failed++;
      run.settled = true;
      reject(
        new EngineError(
          "context_length_exceeded",
          `This model's maximum context length is ${limit} tokens; the request needs ${promptTokens + request.sampling.maxTokens}.`,
          400,
        ),
      );
      return { done, cancel: () => {} };
    }
    if (this.running.size < (this.options.maxBatch ?? 4)) this.begin(run);
    else this.queue.push(run);
    return { done, cancel: () => this.cancel(run) };
  }

  stats(): EngineStats {
    const maxBatch = this.options.maxBatch ?? 4;
    return {
      busySlots: this.running.size,
      totalSlots: maxBatch,
      queueDepth: this.queue.length,
      kvCacheUsage: this.running.size / maxBatch,
      prefillTokensPerSecond: this.options.prefillTokensPerSecond ?? 1000,
      decodeTokensPerSecond: this.options.decodeTokensPerSecond ?? 100,
      loadedModels: [...this.loaded],
      requestsCompleted: this.completed,
      requestsFailed: this.failed,
      tokensGenerated: this.tokens,
      promptTokensProcessed: this.promptTokens,
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const run of [...this.running.values(), ...this.queue]) this.cancel(run);
    for (const job of [...this.embedding]) job.cancel();
  }

  private begin(run: Running): void {
    run.started = true;
    this.promptTokens += run.promptTokens;
    this.running.set(run.request.id, run);
    this.schedule(run);
  }

  private schedule(run: Running): void {
    const interval = this.options.tokenIntervalMs ?? 0;
    const step = () => this.step(run);
    run.timer = interval > 0 ? setTimeout(step, interval) : setImmediate(step);
  }

  private step(run: Running): void {
    run.timer = undefined;
    if (run.settled) return;
    const { request } = run;
    const max = request.sampling.maxTokens;
    const natural = this.options.tokensPerGeneration ?? 16;
    if (run.produced >= natural) {
      this.finish(run, "stop");
      return;
    }
    const piece = (this.options.token ?? ((i) => `tok${i} `))(run.produced, request);
    const combined = run.text + piece;
    const stopAt = firstStop(combined, request.sampling.stop);
    if (stopAt !== undefined) {
      const visible = combined.slice(run.text.length, stopAt);
      if (visible) run.onToken({ text: visible, tokens: 1 });
      run.produced++;
      this.tokens++;
      this.finish(run, "stop");
      return;
    }
    run.text = combined;
    run.produced++;
    this.tokens++;
    run.onToken({ text: piece, tokens: 1 });
    if (run.settled) return;
    if (run.produced >= max) {
      this.finish(run, "length");
      return;
    }
    this.schedule(run);
  }

  private finish(run: Running, reason: GenerationResult["finishReason"]): void {
    if (run.settled) return;
    run.settled = true;
    if (reason !== "cancelled") this.completed++;
    this.free(run);
    // Its "tokenizer" makes one token of each piece, so what it sampled is what its text counts to.
    run.resolve({
      promptTokens: run.promptTokens,
      completionTokens: run.produced,
      generatedTokens: run.produced,
      finishReason: reason,
    });
  }

  private cancel(run: Running): void {
    if (run.settled) return;
    this.cancelled.push(run.request.id);
    if (run.timer) {
      clearTimeout(run.timer as NodeJS.Timeout);
      clearImmediate(run.timer as NodeJS.Immediate);
    }
    this.finish(run, "cancelled");
  }

  private free(run: Running): void {
    const index = this.queue.indexOf(run);
    if (index >= 0) this.queue.splice(index, 1);
    if (this.running.get(run.request.id) === run) {
      this.running.delete(run.request.id);
      const next = this.queue.shift();
      if (next) this.begin(next);
    }
  }
}

function countPromptTokens(request: GenerationRequest): number {
  const { input } = request;
  const text =
    input.kind === "chat"
      ? input.messages.map((m) => m.content).join(" ")
      : input.kind === "text"
        ? input.prompt
        : input.text;
  return text.split(/\s+/).filter((w) => w !== "").length + (input.kind === "chat" ? 3 : 0);
}

/** A unit vector from a text's SHA-256: the same text, the same vector. */
export function scriptedVector(text: string, dimensions: number): Float32Array {
  const out = new Float32Array(dimensions);
  let sum = 0;
  for (let i = 0; i < dimensions; i++) {
    const byte = createHash("sha256").update(`${i}:${text}`).digest()[0] as number;
    out[i] = byte - 127.5;
    sum += (out[i] as number) ** 2;
  }
  const norm = Math.sqrt(sum);
  for (let i = 0; i < dimensions; i++) out[i] = (out[i] as number) / norm;
  return out;
}

function firstStop(text: string, stops: string[]): number | undefined {
  let best: number | undefined;
  for (const s of stops) {
    const i = text.indexOf(s);
    if (i >= 0 && (best === undefined || i < best)) best = i;
  }
  return best;
}
