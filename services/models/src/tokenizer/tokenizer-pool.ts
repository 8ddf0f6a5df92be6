/**
 * llama.cpp's token counting off the event loop: worker threads that each load vocabulary files on
 * first use and count prompts and texts with ModelTokenizer, so that a busy coordinator spends a
 * message each way on a count instead of the tokenization itself. They also describe a vocabulary
 * (describeVocabulary) for FastModelTokenizer, the port the coordinator then counts with where one
 * exists; the workers remain the reference it is checked against and the counter of every other
 * vocabulary.
 */
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";
import type { GenerationInput } from "../chat/generation-input.js";
import type { VocabularyDescription } from "./vocabulary-description.js";

export interface TokenizerPoolOptions {
  /** Worker threads (at least 1). */
  threads: number;
  /**
   * A count that takes longer than this, plus a millisecond per 250 characters counted, is
   * rejected (a stuck or dead worker must not hang a request). The allowance grows with the text so
   * that a provider cannot escape the count (and be held only to the bounds) by sending more text
   * than can be tokenized in a fixed time.
   */
  timeoutMs?: number;
}

type Request =
  | { id: number; op: "prompt"; path: string; input: GenerationInput }
  | { id: number; op: "texts"; path: string; texts: readonly string[] }
  | { id: number; op: "describe"; path: string }
  | { id: number; op: "forget"; path: string }
  | { id: number; op: "close" };

type Reply =
  | { id: number; count: number }
  | { id: number; description: VocabularyDescription }
  | { id: number; error: string };

interface Pending {
  resolve: (value: number | VocabularyDescription) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

interface Slot {
  worker: Worker;
  pending: Map<number, Pending>;
}

/**
 * The worker: CommonJS evaluated from this string, importing the built package (a worker cannot run
 * the TypeScript sources tests import) and node-llama-cpp by URL.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const tokenizers = new Map();
let llama;
async function tokenizer(path) {
  let t = tokenizers.get(path);
  if (!t) {
    t = (async () => {
      const { ModelTokenizer } = await import(workerData.modelsUrl);
      const { getLlama } = await import(workerData.llamaUrl);
      llama ??= getLlama({ gpu: false, build: "never", skipDownload: true, maxThreads: 1, logLevel: "error",
        logger: () => {} });
      return ModelTokenizer.open(await llama, path);
    })();
    tokenizers.set(path, t);
    t.catch(() => tokenizers.delete(path));
  }
  return t;
}
parentPort.on("message", async (m) => {
  try {
    if (m.op === "close") {
      // Native resources are released before the thread ends: terminating a thread that holds
      // llama.cpp objects aborts the whole process.
      for (const t of tokenizers.values()) await (await t.catch(() => undefined))?.dispose();
      tokenizers.clear();
      if (llama) await (await llama).dispose();
      parentPort.close();
      return;
    }
    if (m.op === "forget") {
      const t = tokenizers.get(m.path);
      tokenizers.delete(m.path);
      if (t) await (await t).dispose();
      return;
    }
    const t = await tokenizer(m.path);
    if (m.op === "describe") {
      const { describeVocabulary } = await import(workerData.modelsUrl);
      const description = describeVocabulary(t);
      parentPort.postMessage({ id: m.id, description }, [description.vocabulary.attributes.buffer]);
      return;
    }
    let count = 0;
    if (m.op === "prompt") count = t.countPrompt(m.input);
    else for (const text of m.texts) count += t.countText(text);
    parentPort.postMessage({ id: m.id, count });
  } catch (e) {
    parentPort.postMessage({ id: m.id, error: String((e && e.message) || e) });
  }
});
`;

function workerData(): { modelsUrl: string; llamaUrl: string } {
  const require = createRequire(import.meta.url);
  const root = dirname(require.resolve("@darkbloom/models/package.json"));
  return {
    modelsUrl: pathToFileURL(join(root, "dist", "index.js")).href,
    llamaUrl: pathToFileURL(require.resolve("node-llama-cpp")).href,
  };
}

export class TokenizerPool {
  private readonly slots: (Slot | undefined)[];
  private readonly timeoutMs: number;
  private nextId = 0;
  private closed = false;

  constructor(options: TokenizerPoolOptions) {
    if (!Number.isInteger(options.threads) || options.threads < 1) {
      throw new RangeError("a tokenizer pool needs at least one thread");
    }
    this.slots = new Array(options.threads).fill(undefined);
    this.timeoutMs = options.timeoutMs ?? 10_000;
  }

  /** Prompt tokens of `input` with the vocabulary file at `path`. */
  countPrompt(path: string, input: GenerationInput): Promise<number> {
    return this.send({ id: 0, op: "prompt", path, input }) as Promise<number>;
  }

  /** Tokens of the texts (each counted on its own), summed. */
  countTexts(path: string, texts: readonly string[]): Promise<number> {
    return this.send({ id: 0, op: "texts", path, texts }) as Promise<number>;
  }

  /** What llama.cpp derived from the vocabulary at `path` (see FastModelTokenizer). */
  describe(path: string): Promise<VocabularyDescription> {
    return this.send({ id: 0, op: "describe", path }) as Promise<VocabularyDescription>;
  }

  /** Frees the vocabulary in every worker (the file may be deleted afterwards). */
  forget(path: string): void {
    for (const slot of this.slots) slot?.worker.postMessage({ id: 0, op: "forget", path } satisfies Request);
  }

  /** Ends every worker once it released its native resources (terminating one could abort the process). */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(
      this.slots.map(async (slot) => {
        if (!slot) return;
        const exited = new Promise((resolve) => slot.worker.once("exit", resolve));
        slot.worker.postMessage({ id: 0, op: "close" } satisfies Request);
        let timer: NodeJS.Timeout | undefined;
        const stuck = new Promise((resolve) => {
          timer = setTimeout(resolve, 5_000, "stuck");
        });
        // A worker that does not finish within the time left is terminated after all.
        if ((await Promise.race([exited, stuck])) === "stuck") await slot.worker.terminate();
        clearTimeout(timer);
      }),
    );
  }

  private send(request: Request): Promise<number | VocabularyDescription> {
    if (this.closed) return Promise.reject(new Error("the tokenizer pool is closed"));
    const slot = this.leastBusy();
    const id = ++this.nextId;
    // llama.cpp tokenizes well under a microsecond a character; four leave room for a loaded machine.
    const limitMs = this.timeoutMs + Math.ceil(charactersOf(request) / 250);
    return new Promise<number | VocabularyDescription>((resolve, reject) => {
      const timer = setTimeout(() => {
        slot.pending.delete(id);
        reject(new Error(`no token count within ${limitMs} ms`));
      }, limitMs);
      timer.unref();
      slot.pending.set(id, { resolve, reject, timer });
      slot.worker.postMessage({ ...request, id });
    });
  }

  /** The worker with the fewest counts outstanding, started (or restarted) as needed. */
  private leastBusy(): Slot {
    let best = -1;
    for (let i = 0; i < this.slots.length; i++) {
      const slot = this.slots[i];
      if (slot === undefined) {
        best = i;
        break;
      }
      if (best < 0 || slot.pending.size < (this.slots[best] as Slot).pending.size) best = i;
    }
    return this.slots[best] ?? this.start(best);
  }

  private start(index: number): Slot {
    // execArgv: [] keeps the parent's --conditions (tests resolve packages to their TypeScript
    // sources) out of the worker, which imports the built package.
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: workerData(), execArgv: [] });
    worker.unref();
    const slot: Slot = { worker, pending: new Map() };
    const failAll = (error: Error) => {
      if (this.slots[index] === slot) this.slots[index] = undefined;
      for (const p of slot.pending.values()) {
        clearTimeout(p.timer);
        p.reject(error);
      }
      slot.pending.clear();
    };
    worker.on("message", (reply: Reply) => {
      const p = slot.pending.get(reply.id);
      if (!p) return;
      slot.pending.delete(reply.id);
      clearTimeout(p.timer);
      if ("error" in reply) p.reject(new Error(reply.error));
      else p.resolve("description" in reply ? reply.description : reply.count);
    });
    worker.on("error", (e) => failAll(e));
    worker.on("exit", (code) => failAll(new Error(`a tokenizer worker exited (${code})`)));
    this.slots[index] = slot;
    return slot;
  }
}

/** The characters a request asks to count. */
function charactersOf(request: Request): number {
  if (request.op === "texts") return request.texts.reduce((sum, t) => sum + t.length, 0);
  if (request.op !== "prompt") return 0;
  const input = request.input;
  if (input.kind === "text") return input.prompt.length;
  if (input.kind === "embedding") return input.text.length;
  return input.messages.reduce((sum, m) => sum + m.content.length, 0);
}
