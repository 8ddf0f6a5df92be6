// The scheduler contract both batching cores keep (batch-scheduler.ts), as one set of tests that
// llama.test.ts and mlx.test.ts each run on their backend: output that does not depend on the batch,
// prefill that never stalls decoding rows, seeds, cancels, the bounded queue, grammars, logit bias,
// logprobs and close.
// What a backend adds (its model, its kv options, its reference) stays in its own file.
import { expect, it } from "vitest";
import type {
  BatchSchedulerOptions,
  NativeSamplingOptions,
  NativeScheduler,
  SchedulerStats,
  TokenLogprobs,
} from "./batch-scheduler.js";
import {
  generate,
  generateTogether,
  generateWithLogprobs,
  type Outcome,
  thrownCodeWith,
} from "./scheduler.test-support.js";

export interface ContractHarness<C extends string, S extends SchedulerStats> {
  /** A scheduler of the loaded model: rows 4 and 512 cells per row unless `options` say; closed after. */
  scheduler(options?: BatchSchedulerOptions): Promise<NativeScheduler<C, S>>;
  /** Four prompts of the model whose greedy continuations differ. */
  prompts(): Int32Array[];
  /** A prompt of more than 5 × 16 tokens. */
  longPrompt(): Int32Array;
  /** A token that is not an end of generation. */
  plainToken(): number;
  /** Logit biases that ban every end-of-generation token (a row runs to its maxTokens). */
  eogBans(): Array<[number, number]>;
  codeOf(error: unknown): string | undefined;
  /** Whether the core enforces a sampling grammar (llama) or refuses any (MLX). */
  grammar: "enforced" | "refused";
}

const GREEDY: NativeSamplingOptions = { temperature: 0 };

/** Declares the contract's tests in the caller's describe block (the harness is read inside them). */
export function schedulerContract<C extends string, S extends SchedulerStats>(
  h: ContractHarness<C, S>,
): void {
  const thrownCode = (fn: () => unknown) => thrownCodeWith((e) => h.codeOf(e), fn);
  const prompt = (i: number) => h.prompts()[i] ?? new Int32Array([1]);
  const endless = () => ({ ...GREEDY, logitBias: h.eogBans() });

  it("generates exactly the same greedy tokens at batch 4 as one at a time", async () => {
    const batched = await h.scheduler({ rows: 4 });
    const requests = h.prompts().map((p) => ({ prompt: p, maxTokens: 24, sampling: GREEDY }));
    const together = await Promise.all(requests.map((r) => generate(batched, r)));
    const single = await h.scheduler({ rows: 1 });
    const alone: Outcome[] = [];
    for (const r of requests) alone.push(await generate(single, r));
    expect(together).toEqual(alone);
    expect(together.some((o) => o.tokens.length > 1)).toBe(true);
    for (const [i, o] of together.entries()) {
      expect(o.promptTokens).toBe(requests[i]?.prompt.length);
      expect(o.generatedTokens).toBe(o.tokens.length);
      expect(o.reason).toBe(o.tokens.length === 24 ? "length" : "stop");
    }
    // Different prompts, different continuations: the comparison is not vacuous.
    expect(new Set(together.map((o) => o.tokens.join())).size).toBeGreaterThan(1);
    const stats = batched.stats();
    expect(stats).toMatchObject({ busyRows: 0, queued: 0, rows: 4, kvCellsUsed: 0 });
    expect(stats.tokensGenerated).toBe(together.reduce((n, o) => n + o.tokens.length, 0));
    expect(stats.decodeSteps).toBeGreaterThan(0);
    expect(stats.decodeSteps).toBeLessThan(stats.tokensGenerated);
    expect(stats.kvCells).toBeGreaterThanOrEqual(4 * 512);
  });

  it("prefills a long prompt in chunks while 3 rows decode, sampling exactly as alone", async () => {
    const long = h.longPrompt();
    expect(long.length).toBeGreaterThan(5 * 16);
    const options = { rows: 4, prefillChunk: 16 };
    const busy = await h.scheduler(options);
    const others = generateTogether(
      busy,
      [0, 1, 2].map((i) => ({ prompt: prompt(i), maxTokens: 200, sampling: endless() })),
    );
    await others.decoding;
    const joined = await generate(busy, { prompt: long, maxTokens: 16, sampling: GREEDY });
    expect(busy.stats().busyRows).toBe(3); // the others were decoding the whole time
    await others.outcomes;
    const alone = await generate(await h.scheduler(options), {
      prompt: long,
      maxTokens: 16,
      sampling: GREEDY,
    });
    expect(joined).toEqual(alone);
    expect(joined.tokens.length).toBeGreaterThan(0);
  });

  it("reproduces a seed alone and among other rows; another seed differs", async () => {
    const sampling = (seed: number): NativeSamplingOptions => ({
      temperature: 1.5,
      topK: 100,
      topP: 0.95,
      seed,
    });
    const request = (seed: number) => ({ prompt: prompt(0), maxTokens: 24, sampling: sampling(seed) });
    const s = await h.scheduler({ rows: 4 });
    const first = await generate(s, request(42));
    const again = await generate(s, request(42));
    const [, amid] = await Promise.all([
      generate(s, { ...request(7), prompt: prompt(1) }),
      generate(s, request(42)),
      generate(s, request(8)),
      generate(s, { ...request(9), prompt: prompt(2) }),
    ]);
    const other = await generate(s, request(43));
    expect(first.tokens.length).toBeGreaterThan(3);
    expect(again).toEqual(first);
    expect(amid).toEqual(first);
    expect(other.tokens).not.toEqual(first.tokens);
  });

  it("frees a cancelled running row at once for a queued request (rows: 1)", async () => {
    const s = await h.scheduler({ rows: 1 });
    let cancelAfterFirst = () => {};
    const running = generate(s, { id: "long", prompt: prompt(0), maxTokens: 400, sampling: endless() }, () =>
      cancelAfterFirst(),
    );
    const queued = generate(s, { id: "next", prompt: prompt(1), maxTokens: 8, sampling: GREEDY });
    cancelAfterFirst = () => {
      s.cancel("long");
      s.cancel("long"); // idempotent
    };
    const cancelled = await running;
    expect(cancelled.reason).toBe("cancelled");
    expect(cancelled.tokens.length).toBeLessThan(400);
    const next = await queued;
    expect(next.reason).toMatch(/^(length|stop)$/);
    s.cancel("next"); // finished: ignored
    s.cancel("never-submitted");
    expect(s.stats()).toMatchObject({ busyRows: 0, queued: 0, kvCellsUsed: 0 });
  });

  it("cancels a queued request at once", async () => {
    const s = await h.scheduler({ rows: 1 });
    const p = { prompt: prompt(0), maxTokens: 300, sampling: endless() };
    const running = generate(s, { ...p, id: "a" });
    const queued = generate(s, { ...p, id: "b" });
    s.cancel("b");
    expect((await queued).reason).toBe("cancelled");
    expect((await queued).tokens).toEqual([]);
    s.cancel("a");
    expect((await running).reason).toBe("cancelled");
  });

  it("throws busy past the queue depth", async () => {
    const s = await h.scheduler({ rows: 1, queueDepth: 1 });
    const p = { prompt: prompt(0), maxTokens: 300, sampling: endless() };
    const a = generate(s, { ...p, id: "a" });
    const b = generate(s, { ...p, id: "b" });
    expect(thrownCode(() => s.submit({ ...p, id: "c" }, () => {}))).toBe("busy");
    expect(thrownCode(() => s.submit({ ...p, id: "a" }, () => {}))).toBe("bad_input");
    s.cancel("a");
    s.cancel("b");
    expect((await a).reason).toBe("cancelled");
    expect((await b).reason).toBe("cancelled");
  });

  it("decodes under a grammar, or refuses one at submit, and refuses a grammar that does not parse", async () => {
    const s = await h.scheduler({ rows: 2 });
    const p = { prompt: prompt(0), maxTokens: 16 };
    const bad = { ...p, id: "bad", sampling: { ...GREEDY, grammar: "root ::= missing-rule" } };
    expect(thrownCode(() => s.submit(bad, () => {}))).toBe("bad_input");
    const word = { ...GREEDY, grammar: 'root ::= "hello"' };
    if (h.grammar === "refused") {
      expect(thrownCode(() => s.submit({ ...p, id: "g", sampling: word }, () => {}))).toBe("bad_input");
      return;
    }
    // The grammar allows five characters and then only the end: the row stops by itself, within
    // five tokens, where without it the random model runs to maxTokens.
    const out = await generate(s, { ...p, sampling: word });
    expect(out.reason).toBe("stop");
    expect(out.tokens.length).toBeLessThanOrEqual(5);
    expect((await generate(s, { ...p, sampling: endless() })).reason).toBe("length");
  });

  it("forces a token with a logit bias", async () => {
    const forced = h.plainToken();
    const s = await h.scheduler({ rows: 2 });
    for (const temperature of [0, 1]) {
      const out = await generate(s, {
        prompt: prompt(0),
        maxTokens: 10,
        sampling: { temperature, seed: 1, logitBias: [[forced, 100]] },
      });
      expect(out).toMatchObject({ reason: "length", tokens: Array(10).fill(forced) });
    }
  });

  it("delivers fast steps' tokens together (its first token at once), or each step's at deliveryIntervalUs 0", async () => {
    const request = { prompt: prompt(1), maxTokens: 64, sampling: { ...endless(), logprobs: 2 } };
    const run = async (deliveryIntervalUs: number) => {
      const s = await h.scheduler({ rows: 2, deliveryIntervalUs });
      const sizes: number[] = [];
      const logprobs: TokenLogprobs[] = [];
      const out = await generate(s, request, (event) => {
        sizes.push(event.tokens.length);
        expect(event.logprobs?.length).toBe(event.tokens.length);
        logprobs.push(...(event.logprobs ?? []));
      });
      return { out, sizes, logprobs };
    };
    const everyStep = await run(0);
    expect(everyStep.out).toMatchObject({ reason: "length", generatedTokens: 64 });
    expect(everyStep.sizes).toEqual(Array(64).fill(1));
    // 200 ms between deliveries: far longer than a step of the test's models, so a row's tokens
    // come in a few events, the same tokens with the same figures, and all of them before its done.
    const held = await run(200_000);
    expect(held.out).toEqual(everyStep.out);
    expect(held.logprobs).toEqual(everyStep.logprobs);
    expect(held.sizes[0]).toBe(1);
    expect(held.sizes.length).toBeLessThanOrEqual(16);
  });

  it("reports each token's raw logprobs: under greedy the sampled token is the most likely", async () => {
    const s = await h.scheduler({ rows: 2 });
    const [five, none, zero] = await Promise.all([
      generateWithLogprobs(s, { prompt: prompt(0), maxTokens: 12, sampling: { ...GREEDY, logprobs: 5 } }),
      generate(s, { prompt: prompt(0), maxTokens: 12, sampling: GREEDY }, (event) =>
        expect(event.logprobs).toBeUndefined(),
      ),
      generateWithLogprobs(s, { prompt: prompt(0), maxTokens: 12, sampling: { ...GREEDY, logprobs: 0 } }),
    ]);
    expect(five.tokens.length).toBeGreaterThan(1);
    expect(five.tokens).toEqual(none.tokens);
    expect(zero.tokens).toEqual(none.tokens);
    for (const [i, token] of five.tokens.entries()) {
      const lp = five.logprobs[i] as TokenLogprobs;
      const top = [...lp.topLogprobs];
      expect(lp.topTokens[0]).toBe(token);
      expect(lp.logprob).toBe(top[0]);
      expect(top).toHaveLength(5);
      expect(new Set(lp.topTokens).size).toBe(5);
      expect(top.every((v, k) => v <= 0 && (k === 0 || v <= (top[k - 1] ?? 0)))).toBe(true);
      expect(top.reduce((sum, v) => sum + Math.exp(v), 0)).toBeLessThanOrEqual(1 + 1e-6);
      // 0 alternatives: the sampled token's own, the same number.
      expect(zero.logprobs[i]?.logprob).toBe(lp.logprob);
      expect(zero.logprobs[i]?.topTokens).toHaveLength(0);
    }
  });

  it("samples the same tokens with logprobs as without, and reports the raw logprob of each", async () => {
    const sampling: NativeSamplingOptions = { temperature: 0.8, seed: 11, logitBias: h.eogBans() };
    const s = await h.scheduler({ rows: 2 });
    const request = { prompt: prompt(1), maxTokens: 24 };
    const [plain, reported] = await Promise.all([
      generate(s, { ...request, sampling }),
      generateWithLogprobs(s, { ...request, sampling: { ...sampling, logprobs: 20 } }),
    ]);
    expect(reported.tokens).toEqual(plain.tokens);
    expect(reported.tokens).toHaveLength(24);
    for (const [i, token] of reported.tokens.entries()) {
      const lp = reported.logprobs[i] as TokenLogprobs;
      expect(lp.topTokens).toHaveLength(20);
      expect(lp.logprob).toBeLessThanOrEqual(0);
      const at = lp.topTokens.indexOf(token);
      expect(at < 0 ? lp.logprob <= (lp.topLogprobs[19] ?? 0) : lp.logprob === lp.topLogprobs[at]).toBe(true);
    }
  });

  it("reports a banned token's raw logprob: logit bias changes what is sampled, not the logprobs", async () => {
    const s = await h.scheduler({ rows: 1 });
    const bans = h.eogBans();
    const request = { prompt: prompt(2), maxTokens: 1 };
    const free = await generateWithLogprobs(s, {
      ...request,
      sampling: { ...GREEDY, logitBias: bans, logprobs: 5 },
    });
    const greedy = free.tokens[0] as number;
    const banned = await generateWithLogprobs(s, {
      ...request,
      sampling: { ...GREEDY, logitBias: [...bans, [greedy, Number.NEGATIVE_INFINITY]], logprobs: 5 },
    });
    const before = free.logprobs[0] as TokenLogprobs;
    const after = banned.logprobs[0] as TokenLogprobs;
    const sampled = banned.tokens[0] as number;
    expect(sampled).not.toBe(greedy);
    // The same prompt's raw distribution, whatever the bias; the greedy token is in it with its logprob.
    expect(after.topTokens).toEqual(before.topTokens);
    expect(after.topLogprobs).toEqual(before.topLogprobs);
    expect(after.topLogprobs[after.topTokens.indexOf(greedy)]).toBe(before.logprob);
    // The raw argmax is the banned greedy token or an end of generation, banned too.
    expect(after.topTokens[0]).not.toBe(sampled);
    const at = after.topTokens.indexOf(sampled);
    if (at >= 0) expect(after.logprob).toBe(after.topLogprobs[at]);
    else expect(after.logprob).toBeLessThanOrEqual(after.topLogprobs[4] ?? 0);
  });

  it("refuses logprobs outside 0 to 20 at submit", async () => {
    const s = await h.scheduler({ rows: 1 });
    for (const logprobs of [21, -1, 1.5, Number.NaN, "3" as unknown as number]) {
      const request = { id: "x", prompt: prompt(0), maxTokens: 1, sampling: { logprobs } };
      expect(thrownCode(() => s.submit(request, () => {}))).toBe("bad_input");
    }
    expect(s.stats()).toMatchObject({ queued: 0, busyRows: 0 });
  });

  it("close() with rows running and queued completes them all as cancelled and resolves", async () => {
    const s = await h.scheduler({ rows: 2 });
    const p = { prompt: prompt(0), maxTokens: 400, sampling: endless() };
    let started!: () => void;
    const decoding = new Promise<void>((r) => {
      started = r;
    });
    const all = [generate(s, p, () => started()), generate(s, p), generate(s, p)];
    await decoding;
    await s.close();
    const outcomes = await Promise.all(all);
    expect(outcomes.map((o) => o.reason)).toEqual(["cancelled", "cancelled", "cancelled"]);
    expect(outcomes[2]?.tokens).toEqual([]);
    expect(thrownCode(() => s.submit({ ...p, id: "late" }, () => {}))).toBe("closed");
    await s.close(); // idempotent
  });
}
