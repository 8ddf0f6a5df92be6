/**
 * The step loop of a model: continuous batching over its rows. A loop runs while any row has work.
 * Each round it retires finished rows, admits queued requests into free rows, runs one decode step,
 * then one prefill step:
 * - Decode step: `next()` is called on the token generator of every decoding row in the same tick
 *   and the loop awaits them together. node-llama-cpp queues each sequence's pending token on the
 *   context and dispatches everything queued in one event-loop turn (`setImmediate`, or at once when
 *   every sequence has queued) as one `llama_decode`, so a step is one batched decode of all rows
 *   (measured: 100 steps of 4 rows → 100 decode calls; rows that each loop on their own drift into
 *   ~7% extra, partial decodes).
 * - Prefill step: the next `prefillChunk` tokens of the oldest row still reading its prompt,
 *   evaluated alone; the last chunk starts the row's generator, which samples its first token, and
 *   the row joins the decode steps. Long prompts are thus interleaved with the running rows instead
 *   of stalling them, and rows join and leave between steps while the others keep decoding.
 *
 * Determinism. Output must not depend on what else is running: same request + seed → same text at
 * batch 1 and batch N. Three llama.cpp facts matter (found by bit-comparing token probabilities):
 * (1) ggml's CPU matmuls are row-independent, so decode steps are batch-invariant; (2) how a prompt is
 * split into ubatches changes the numerics (and with a non-unified KV cache llama.cpp re-splits a
 * mixed batch per sequence), hence prompt chunks are fixed-size, aligned to the prompt start and never
 * shared with other rows; (3) CPU flash attention over an F16 cache picks kernels by batch shape (a
 * KV-split reduction for a lone one-token stream with ≥512 cells, a tiled kernel for long query runs),
 * hence flash attention is off unless the KV cache is quantized (then llama.cpp requires it, and its
 * kernel for quantized caches is shape-invariant; model-runner.ts). Verified on CPU; GPU backends are
 * not claimed.
 */
import type { Token } from "node-llama-cpp";
import { type EngineMeters, errorMessage } from "../meters.js";
import { IncrementalDetokenizer } from "../text.js";
import type { Job } from "./job.js";
import type { EngineLog, ModelRunner } from "./model-runner.js";

type Outcome = { ok: true; value: IteratorResult<Token, void> } | { ok: false; error: unknown };

export class StepLoop {
  constructor(
    /** Prompt tokens evaluated per prefill step. */
    private readonly prefillChunk: number,
    private readonly meters: EngineMeters,
    private readonly log: EngineLog,
    /** The runner's loop stopped with nothing queued: the engine may unload it after its idle time. */
    private readonly onIdle: (runner: ModelRunner) => void,
  ) {}

  /** Starts the runner's loop unless it runs already (a running loop admits queued jobs at its next step). */
  kick(runner: ModelRunner): void {
    clearTimeout(runner.idleTimer);
    runner.idleTimer = undefined;
    if (runner.loopRunning) return;
    runner.loopRunning = true;
    runner.loopDone = this.run(runner)
      .catch((err: unknown) => {
        this.log("error", `step loop for ${runner.file.id} failed: ${errorMessage(err)}`);
        for (const job of [...runner.queue, ...runner.active]) this.meters.failJob(job, err);
      })
      .finally(() => {
        runner.loopRunning = false;
        if (!runner.disposed && runner.queue.some((j) => !j.settled)) this.kick(runner);
        else this.onIdle(runner);
      });
  }

  /**
   * Runs while any of the runner's rows has work. Each round: retire finished rows, admit queued
   * jobs, one decode step over every decoding row, then one prompt chunk of the oldest row still
   * evaluating its prompt. Nothing else is queued on the context while a step runs, so each step is
   * one llama_decode whose composition depends only on the step kind.
   */
  private async run(runner: ModelRunner): Promise<void> {
    for (;;) {
      await this.retire(runner);
      if (runner.disposed) return;
      this.admit(runner);
      const decoding = [...runner.active].filter((j) => j.phase === "decoding" && !j.settled);
      if (decoding.length > 0) await this.decodeStep(decoding);
      const prefill = [...runner.active].find((j) => j.phase === "prefill" && !j.settled);
      if (prefill) await this.prefillStep(prefill);
      if (decoding.length === 0 && !prefill && runner.active.size === 0 && runner.queue.length === 0) return;
    }
  }

  /** One token for every decoding row, all queued in the same tick: one batched decode. */
  private async decodeStep(decoding: Job[]): Promise<void> {
    const started = performance.now();
    const outcomes = await Promise.all(
      decoding.map((job) =>
        job.iterator!.next().then(
          (value): Outcome => ({ ok: true, value }),
          (error: unknown): Outcome => ({ ok: false, error }),
        ),
      ),
    );
    this.meters.decodeStep(performance.now() - started, decoding.length);
    for (const [i, job] of decoding.entries()) this.handleOutcome(job, outcomes[i]!);
  }

  /**
   * The next `prefillChunk` tokens of one row's prompt, evaluated alone. Chunk boundaries depend only
   * on the prompt, never on what else is running: llama.cpp's numerics vary with how a prompt is
   * split into ubatches (and a non-unified KV cache splits mixed batches per sequence), so a prompt
   * evaluated alongside other rows' tokens could sample differently than it would alone. The last
   * chunk starts the row's token generator, whose first step samples the first completion token.
   */
  private async prefillStep(job: Job): Promise<void> {
    const tokens = job.prompt!.tokens;
    const row = job.row!;
    const start = job.prefillOffset;
    const end = Math.min(tokens.length, start + this.prefillChunk);
    const chunk = tokens.slice(start, end);
    const started = performance.now();
    let outcome: Outcome | undefined;
    if (end < tokens.length) {
      try {
        await row.sequence.evaluateWithoutGeneratingNewTokens(chunk);
      } catch (error) {
        outcome = { ok: false, error };
      }
    } else {
      job.iterator = row.sequence.evaluate(chunk, job.evaluateOptions());
      outcome = await job.iterator.next().then(
        (value): Outcome => ({ ok: true, value }),
        (error: unknown): Outcome => ({ ok: false, error }),
      );
    }
    const seconds = (performance.now() - started) / 1000;
    job.prefillOffset = end;
    if (!outcome || outcome.ok) this.meters.prefillChunk(chunk.length, seconds);
    if (outcome) {
      if (job.phase === "prefill") job.phase = "decoding";
      this.handleOutcome(job, outcome);
    }
  }

  /** Queued jobs take free rows, oldest first; a row starts with a fresh detokenizer. */
  private admit(runner: ModelRunner): void {
    while (runner.queue.length > 0) {
      const row = runner.rows.find((r) => r.job === undefined);
      if (!row) return;
      const job = runner.queue.shift()!;
      if (job.settled || !job.prompt) continue;
      row.job = job;
      job.row = row;
      job.phase = "prefill";
      job.prefillOffset = 0;
      job.detokenizer = new IncrementalDetokenizer(runner.model);
      job.tokenizer = runner.tokenizer;
      runner.active.add(job);
    }
  }

  /** Settled jobs leave their rows: the generator is closed and the row's KV cells cleared for the next. */
  private async retire(runner: ModelRunner): Promise<void> {
    for (const job of [...runner.active]) {
      if (!job.settled) continue;
      runner.active.delete(job);
      const row = job.row;
      job.row = undefined;
      try {
        await job.iterator?.return();
      } catch {
        // the generator already failed
      }
      if (row) {
        try {
          await row.sequence.clearHistory();
        } catch (err) {
          this.log("warn", `clearing row ${row.index} of ${runner.file.id} failed: ${errorMessage(err)}`);
        }
        row.job = undefined;
      }
    }
  }

  /** Applies one generator step to a job: emit text, detect stops, length and end of generation. */
  private handleOutcome(job: Job, outcome: Outcome): void {
    if (job.settled) return;
    if (!outcome.ok) {
      this.meters.failJob(job, outcome.error);
      return;
    }
    const result = outcome.value;
    if (result.done || job.prompt?.stopTokens.has(result.value)) {
      this.complete(job, "stop", true);
      return;
    }
    this.meters.counters.tokensGenerated++;
    try {
      const end = job.accept(result.value);
      if (end === "stop") this.complete(job, "stop", false);
      else if (end === "length") this.complete(job, "length", true);
    } catch (err) {
      this.meters.failJob(job, err);
    }
  }

  /** Finishes a job, first flushing the text it held back unless a stop string already ended it. */
  private complete(job: Job, reason: "stop" | "length", flush: boolean): void {
    if (job.settled) return;
    let finishReason = reason;
    if (flush) {
      try {
        finishReason = job.flushText(reason);
      } catch (err) {
        this.meters.failJob(job, err);
        return;
      }
    }
    job.finish(finishReason);
    this.meters.counters.requestsCompleted++;
  }
}
