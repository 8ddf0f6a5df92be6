import { createHash } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type {
  FastModelTokenizer,
  ModelTokenizer,
  TokenizerPool,
  VocabularyDescription,
} from "@darkbloom/models";
import { embeddingModelOf } from "@darkbloom/models/embeddings";
import type { GenerationInput } from "@darkbloom/models/input";
import type { Llama } from "node-llama-cpp";
import type { TokenCounter } from "../billing/usage-meter.js";
import type { Logger } from "../log.js";
import type { CatalogModel } from "./model-catalog.js";

/**
 * How long a vocabulary no model uses any more stays loaded: requests that were counted with it still
 * count their completions with it (a stream can run for minutes).
 */
const RETIRED_TOKENIZER_GRACE_MS = 15 * 60_000;

/**
 * One count in this many made by the TypeScript port is made again by llama.cpp, off the serving
 * path: a difference retires the port for that vocabulary even where every provider happens to
 * claim what the port counted. (An honest provider's usage already exposes a difference on the
 * request where it occurs; the audit covers providers that claim whatever the port counts.) Rare,
 * because a count sent to a worker costs the event loop far more than the port's own count.
 */
const PORT_AUDIT_EVERY = 1024;

/** Where vocabularies come from (the vocabulary store). */
export interface VocabularySource {
  read(sha256: string): Promise<Uint8Array | undefined>;
}

export interface CatalogTokenizersOptions {
  /**
   * Worker threads that hold llama.cpp's tokenizers (0: on the event loop). They describe each
   * vocabulary for the port, recount where a provider disagrees with it, audit it, and count the
   * vocabularies it does not cover.
   */
  threads: number;
}

interface Loaded {
  /** The port (when the vocabulary has one and it has not been retired), else llama.cpp. */
  counter: TokenCounter;
  /** Frees it (its file, its tokenizer in every worker). */
  free(): Promise<void>;
}

/**
 * The catalog's vocabularies, loaded: a synchronous lookup of the counter a model's usage is counted
 * with. Follows the catalog (sync after every reload): a vocabulary newly given to a model is loaded
 * once per hash (its bytes checked against the hash; they were vetted in a child process when
 * uploaded), one no model uses any more is freed after a grace period. Until a vocabulary is loaded
 * its models are metered by bounds, as models without one are; the coordinator waits for the first
 * sync before it serves.
 *
 * The provider's engine counts with llama.cpp (ModelTokenizer), so an honest provider's usage is
 * exactly llama.cpp's count. The coordinator counts on the event loop with FastModelTokenizer, the
 * exact TypeScript port of llama.cpp's byte-level BPE (a few microseconds a count, where a message
 * to a worker and llama.cpp's own tokenization cost several times that), built from what llama.cpp
 * derived when it loaded the vocabulary in a worker. llama.cpp stays the reference: a provider whose
 * usage differs from the port's count is recounted by llama.cpp before anything is decided
 * (confirmedCount), one count in PORT_AUDIT_EVERY is checked against llama.cpp in the background,
 * and a vocabulary on which the two ever differ is counted by llama.cpp alone from then on.
 * Vocabularies the port does not cover (not byte-level BPE, another pre-tokenizer) are counted by
 * llama.cpp throughout.
 */
export class CatalogTokenizers {
  private readonly loaded = new Map<string, Loaded>();
  private readonly failed = new Set<string>();
  private readonly retired = new Map<Loaded, NodeJS.Timeout>();
  private bySha: ReadonlyMap<string, string> = new Map();
  /** Started with the first vocabulary (threads > 0): node-llama-cpp is loaded only when needed. */
  private pool: TokenizerPool | undefined;
  private llama: Promise<Llama> | undefined;
  private dir: string | undefined;
  private syncing: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly source: VocabularySource,
    private readonly log: Logger,
    private readonly options: CatalogTokenizersOptions,
  ) {}

  /** The counter of a catalog model, when it has a vocabulary and it is loaded. */
  get(modelId: string): TokenCounter | undefined {
    const sha = this.bySha.get(modelId);
    return sha === undefined ? undefined : this.loaded.get(sha)?.counter;
  }

  /** Follows a catalog snapshot; resolves when its vocabularies are loaded (or failed to). */
  sync(models: readonly CatalogModel[]): Promise<void> {
    this.bySha = new Map(
      models.flatMap((m) => (m.vocabularySha256 === undefined ? [] : [[m.id, m.vocabularySha256] as const])),
    );
    // One sync at a time, in order: the last snapshot wins.
    this.syncing = this.syncing.then(() => this.apply()).catch(() => {});
    return this.syncing;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.syncing;
    for (const timer of this.retired.values()) clearTimeout(timer);
    const all = [...this.loaded.values(), ...this.retired.keys()];
    this.loaded.clear();
    this.retired.clear();
    for (const loaded of all) await loaded.free().catch(() => {});
    await this.pool?.close();
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }

  private async apply(): Promise<void> {
    const wanted = new Set(this.bySha.values());
    for (const [sha, loaded] of this.loaded) {
      if (wanted.has(sha)) continue;
      this.loaded.delete(sha);
      const timer = setTimeout(() => {
        this.retired.delete(loaded);
        loaded.free().catch(() => {});
      }, RETIRED_TOKENIZER_GRACE_MS);
      timer.unref();
      this.retired.set(loaded, timer);
    }
    for (const sha of wanted) {
      if (this.closed || this.loaded.has(sha) || this.failed.has(sha)) continue;
      let bytes: Uint8Array | undefined;
      try {
        bytes = await this.source.read(sha);
      } catch (err) {
        // The database did not answer: the next reload tries again.
        this.log.warn({ vocabulary: sha.slice(0, 12), err: (err as Error).message }, "vocabulary not read");
        continue;
      }
      try {
        this.loaded.set(sha, await this.load(sha, bytes));
        this.log.info({ vocabulary: sha.slice(0, 12) }, "vocabulary loaded: its models' usage is counted");
      } catch (err) {
        // Not retried until the process restarts: a vocabulary that cannot load will not load later.
        this.failed.add(sha);
        this.log.error(
          { vocabulary: sha.slice(0, 12), err: (err as Error).message },
          "vocabulary cannot be loaded; its models' usage is only bounded",
        );
      }
    }
  }

  private async load(sha: string, bytes: Uint8Array | undefined): Promise<Loaded> {
    if (bytes === undefined) throw new Error("the vocabulary is not stored");
    if (createHash("sha256").update(bytes).digest("hex") !== sha) {
      throw new Error("the stored bytes do not match its hash");
    }
    this.dir ??= await mkdtemp(join(tmpdir(), "darkbloom-tokenizers-"));
    const path = join(this.dir, `${sha}.gguf`);
    await writeFile(path, bytes, { mode: 0o600 });
    // Imported here, not at start-up: most of a coordinator's start (and every admin command) never
    // needs llama.cpp, and loading it costs about 300 ms.
    const { describeVocabulary, ModelTokenizer, TokenizerPool } = await import("@darkbloom/models");
    if (this.options.threads > 0) {
      this.pool ??= new TokenizerPool({ threads: this.options.threads });
      const pool = this.pool;
      // Workers load it on first use; this first count proves it loads.
      await pool.countTexts(path, ["vocabulary check"]);
      const reference: TokenCounter = {
        countPrompt: (input) => pool.countPrompt(path, input),
        countTexts: (texts) => pool.countTexts(path, texts),
      };
      const loaded: Loaded = {
        counter: reference,
        free: async () => {
          pool.forget(path);
          await rm(path, { force: true });
        },
      };
      await this.port(sha, loaded, () => pool.describe(path));
      return loaded;
    }
    let tokenizer: ModelTokenizer;
    try {
      tokenizer = await ModelTokenizer.open(await this.getLlama(), path);
    } finally {
      // llama.cpp has read what it needs (vocabulary-only: no tensors are mapped).
      await rm(path, { force: true });
    }
    const loaded: Loaded = {
      counter: {
        countPrompt: async (input) => tokenizer.countPrompt(input),
        countTexts: async (texts) => texts.reduce((sum, text) => sum + tokenizer.countText(text), 0),
      },
      free: () => tokenizer.dispose(),
    };
    await this.port(sha, loaded, async () => describeVocabulary(tokenizer));
    return loaded;
  }

  /**
   * Puts the port in front of llama.cpp's counter where the vocabulary has one. Building it blocks
   * the event loop once (about 0.3 s for a 150k-token vocabulary, most of it resolving the chat
   * template); a vocabulary without a port keeps llama.cpp's counter.
   */
  private async port(
    sha: string,
    loaded: Loaded,
    describe: () => Promise<VocabularyDescription>,
  ): Promise<void> {
    const { FastModelTokenizer } = await import("@darkbloom/models");
    let fast: FastModelTokenizer;
    try {
      const description = await describe();
      // Whichever counts, the model's call syntax is what tools requests are split with.
      if (description.toolSyntax) loaded.counter.toolSyntax = description.toolSyntax;
      // An embedding model's vector length: what its providers' embeddings are held to.
      const embedding = embeddingModelOf(description.fileInfo);
      if (embedding) loaded.counter.embeddingModel = embedding;
      const unsupported = FastModelTokenizer.unsupported(description);
      if (unsupported) {
        this.log.info(
          { vocabulary: sha.slice(0, 12), reason: unsupported },
          "vocabulary counted by llama.cpp",
        );
        return;
      }
      fast = FastModelTokenizer.create(description);
    } catch (err) {
      this.log.warn(
        { vocabulary: sha.slice(0, 12), err: (err as Error).message },
        "vocabulary counted by llama.cpp",
      );
      return;
    }
    const llamaCpp = loaded.counter;
    const reference = {
      counter: llamaCpp,
      differed: (detail: string) => {
        if (loaded.counter === llamaCpp) return;
        loaded.counter = llamaCpp;
        this.log.error(
          { vocabulary: sha.slice(0, 12), detail },
          "the tokenizer port differs from llama.cpp on this vocabulary; llama.cpp counts it from now on",
        );
      },
    };
    let counts = 0;
    const audit = (ported: number, count: () => Promise<number>) => {
      if (++counts % PORT_AUDIT_EVERY !== 0) return;
      count().then(
        (n) => {
          if (n !== ported) reference.differed(`an audited count: the port ${ported}, llama.cpp ${n}`);
        },
        () => {},
      );
    };
    const countPromptNow = (input: GenerationInput) => {
      const n = fast.countPrompt(input);
      audit(n, () => llamaCpp.countPrompt(input));
      return n;
    };
    const countTextsNow = (texts: readonly string[]) => {
      let n = 0;
      for (const text of texts) n += fast.countText(text);
      audit(n, () => llamaCpp.countTexts([...texts]));
      return n;
    };
    loaded.counter = {
      countPrompt: async (input) => countPromptNow(input),
      countTexts: async (texts) => countTextsNow(texts),
      countPromptNow,
      countTextsNow,
      reference,
      ...(llamaCpp.toolSyntax ? { toolSyntax: llamaCpp.toolSyntax } : {}),
      ...(llamaCpp.embeddingModel ? { embeddingModel: llamaCpp.embeddingModel } : {}),
    };
  }

  private getLlama(): Promise<Llama> {
    this.llama ??= this.startLlama().catch((err: unknown) => {
      this.llama = undefined;
      throw err;
    });
    return this.llama;
  }

  private async startLlama(): Promise<Llama> {
    const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
    return getLlama({
      gpu: false,
      build: "never",
      skipDownload: true,
      maxThreads: 1,
      logLevel: LlamaLogLevel.warn,
      // node-llama-cpp first tries to size a full load of a vocabulary-only file and reports the
      // missing tensors as errors; nothing it says about tokenizer files is the operator's concern.
      logger: (_level, message) => this.log.debug({ llama: message.trimEnd() }, "llama.cpp"),
    });
  }
}
