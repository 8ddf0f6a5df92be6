import { createHash } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ModelTokenizer } from "@darkbloom/models";
import { getLlama, type Llama, LlamaLogLevel } from "node-llama-cpp";
import type { Logger } from "../log.js";
import type { CatalogModel } from "./model-catalog.js";

/** Where vocabularies come from (the vocabulary store). */
export interface VocabularySource {
  read(sha256: string): Promise<Uint8Array | undefined>;
}

/**
 * The catalog's vocabularies, loaded: a synchronous lookup of the tokenizer a model's usage is counted
 * with. Follows the catalog (sync after every reload): a vocabulary newly given to a model is loaded
 * once per hash (its bytes checked against the hash; they were vetted in a child process when
 * uploaded), one no model uses any more is freed. Until a vocabulary is loaded its models are metered
 * by bounds, as models without one are; the coordinator waits for the first sync before it serves.
 *
 * llama.cpp's tokenizer is used, not a reimplementation: the provider's engine counts with the same
 * code (ModelTokenizer), so an honest provider's usage is exactly the coordinator's count.
 */
export class CatalogTokenizers {
  private readonly loaded = new Map<string, ModelTokenizer>();
  private readonly failed = new Set<string>();
  private bySha: ReadonlyMap<string, string> = new Map();
  private llama: Promise<Llama> | undefined;
  private dir: string | undefined;
  private syncing: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly source: VocabularySource,
    private readonly log: Logger,
  ) {}

  /** The tokenizer of a catalog model, when it has a vocabulary and it is loaded. */
  get(modelId: string): ModelTokenizer | undefined {
    const sha = this.bySha.get(modelId);
    return sha === undefined ? undefined : this.loaded.get(sha);
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
    for (const tokenizer of this.loaded.values()) await tokenizer.dispose().catch(() => {});
    this.loaded.clear();
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }

  private async apply(): Promise<void> {
    const wanted = new Set(this.bySha.values());
    for (const [sha, tokenizer] of this.loaded) {
      if (wanted.has(sha)) continue;
      this.loaded.delete(sha);
      await tokenizer.dispose().catch(() => {});
    }
    for (const sha of wanted) {
      if (this.closed || this.loaded.has(sha) || this.failed.has(sha)) continue;
      try {
        this.loaded.set(sha, await this.load(sha));
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

  private async load(sha: string): Promise<ModelTokenizer> {
    const bytes = await this.source.read(sha);
    if (bytes === undefined) throw new Error("the vocabulary is not stored");
    if (createHash("sha256").update(bytes).digest("hex") !== sha)
      throw new Error("the stored bytes do not match its hash");
    this.dir ??= await mkdtemp(join(tmpdir(), "darkbloom-tokenizers-"));
    const path = join(this.dir, `${sha}.gguf`);
    await writeFile(path, bytes, { mode: 0o600 });
    try {
      return await ModelTokenizer.open(await this.getLlama(), path);
    } finally {
      // llama.cpp has read what it needs (vocabulary-only: no tensors are mapped).
      await rm(path, { force: true });
    }
  }

  private getLlama(): Promise<Llama> {
    this.llama ??= getLlama({
      gpu: false,
      build: "never",
      skipDownload: true,
      maxThreads: 1,
      logLevel: LlamaLogLevel.warn,
      // node-llama-cpp first tries to size a full load of a vocabulary-only file and reports the
      // missing tensors as errors; nothing it says about tokenizer files is the operator's concern.
      logger: (_level, message) => this.log.debug({ llama: message.trimEnd() }, "llama.cpp"),
    }).catch((err: unknown) => {
      this.llama = undefined;
      throw err;
    });
    return this.llama;
  }
}
