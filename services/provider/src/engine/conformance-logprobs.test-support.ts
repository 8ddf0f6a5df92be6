/**
 * Engine conformance for `sampling.logprobs` (part of engineConformance): an engine that reports
 * them (Engine.logprobs) gives every token it emits an entry whose bytes are the text's, chunk by
 * chunk, with the raw distribution's figures (greedy picks the most likely token, whatever the
 * alternatives asked for); asking changes nothing sampled. One that does not refuses the request.
 * Not a test file itself.
 */
import { expect, it } from "vitest";
import { rejection, run } from "./conformance.test-support.js";
import type { Engine, GenerationRequest, ModelFile, SamplingOptions, TokenEvent } from "./engine.js";

export interface LogprobsTarget {
  engine(): Engine;
  model(): ModelFile;
  req(input: string, sampling: Partial<SamplingOptions>): GenerationRequest;
}

const PROMPT = "Once upon a time, there was a little robot";

/** Each event's entries spell its text exactly. */
function spelled(events: TokenEvent[]): void {
  for (const e of events) {
    expect(e.logprobs).toBeDefined();
    expect(Buffer.concat((e.logprobs ?? []).map((l) => l.bytes)).toString("utf8")).toBe(e.text);
  }
}

export function logprobsConformance(t: LogprobsTarget): void {
  it("logprobs: an engine reports them only where it says so, or refuses the request", async () => {
    const engine = t.engine();
    if (engine.logprobs?.(t.model())) return;
    const err = await rejection(run(engine, t.req(PROMPT, { logprobs: 2 })).then(() => undefined));
    expect(err).toMatchObject({ code: "invalid_request", httpStatus: 400 });
    expect(err.message).toMatch(/log-probabilities/);
  });

  it("logprobs: every token has an entry, its bytes the text's, greedy picking the likeliest", async (ctx) => {
    const engine = t.engine();
    if (!engine.logprobs?.(t.model())) ctx.skip();
    const plain = await run(engine, t.req(PROMPT, { maxTokens: 16 }));
    const scored = await run(engine, t.req(PROMPT, { maxTokens: 16, logprobs: 5 }));
    expect(scored.text).toBe(plain.text);
    spelled(scored.events);
    const entries = scored.events.flatMap((e) => e.logprobs ?? []);
    expect(entries).toHaveLength(scored.result.generatedTokens);
    for (const e of entries) {
      expect(e.top.length).toBeGreaterThan(0);
      expect(e.top.length).toBeLessThanOrEqual(5);
      expect(e.logprob).toBeLessThanOrEqual(0);
      expect(Math.fround(e.logprob)).toBe(e.logprob);
      // Greedy on the raw logits: the sampled token is the most likely one.
      expect(e.logprob).toBe(e.top[0]!.logprob);
      for (let k = 1; k < e.top.length; k++)
        expect(e.top[k]!.logprob).toBeLessThanOrEqual(e.top[k - 1]!.logprob);
      expect(e.top.reduce((sum, a) => sum + Math.exp(a.logprob), 0)).toBeLessThanOrEqual(1 + 1e-6);
    }
    // 0 alternatives: the sampled token's figure alone.
    const bare = await run(engine, t.req(PROMPT, { maxTokens: 4, logprobs: 0 }));
    expect(bare.events.flatMap((e) => e.logprobs ?? []).every((e) => e.top.length === 0)).toBe(true);
  });

  it("logprobs: seeded sampling and a stop string give the same text as without", async (ctx) => {
    const engine = t.engine();
    if (!engine.logprobs?.(t.model())) ctx.skip();
    const sampled = { temperature: 0.9, seed: 7, maxTokens: 24 };
    const plain = await run(engine, t.req(PROMPT, sampled));
    const scored = await run(engine, t.req(PROMPT, { ...sampled, logprobs: 3 }));
    expect(scored.text).toBe(plain.text);
    spelled(scored.events);
    // A stop string from the middle of the text: the entries end where the text does.
    const stop = plain.text
      .slice(Math.floor(plain.text.length / 2))
      .trim()
      .slice(0, 3);
    if (stop.length === 0) return;
    const cut = await run(engine, t.req(PROMPT, { ...sampled, logprobs: 3, stop: [stop] }));
    expect(cut.text).toBe(plain.text.slice(0, plain.text.indexOf(stop)));
    spelled(cut.events);
  });
}
