import { LOGPROB_FLOOR } from "@darkbloom/protocol/logprobs";
import { describe, expect, it } from "vitest";
import type { TokenEvent, TokenLogprob } from "./engine.js";
import { GenerationJob } from "./generation-job.js";
import { IncrementalDetokenizer } from "./text.js";
import type { SampledLogprob } from "./token-logprobs.js";

/**
 * A byte-level vocabulary: token i's piece is PIECES[i]; some pieces are parts of a character (the
 * emoji 👋 is F0 9F 91 8B), one is a control token with no text.
 */
const PIECES: Uint8Array[] = [
  "He",
  "llo",
  " wor",
  "ld",
  "!",
  "", // 5: a control token
  [0xf0, 0x9f],
  [0x91, 0x8b],
  " w",
  "or",
].map((p) => (typeof p === "string" ? new TextEncoder().encode(p) : Uint8Array.from(p)));
const detokenizer = {
  detokenize: (tokens: readonly number[]) =>
    new TextDecoder().decode(Buffer.concat(tokens.map((t) => PIECES[t]!))),
};

class TestJob extends GenerationJob {
  protected cancelled(): void {}
}

/** Runs the tokens through a job as an engine would, with figures for each; returns the events. */
function run(tokens: number[], options: { stop?: string[]; maxTokens?: number } = {}) {
  const events: TokenEvent[] = [];
  const job = new TestJob(
    {
      id: "r",
      model: "m",
      input: { kind: "text", prompt: "x" },
      sampling: {
        temperature: 0,
        topP: 1,
        topK: 0,
        stop: options.stop ?? [],
        maxTokens: options.maxTokens ?? 100,
        logprobs: 2,
      },
    },
    (e) => events.push(e),
  );
  job.detokenizer = new IncrementalDetokenizer(detokenizer);
  let reason: "stop" | "length" | undefined;
  for (const [i, token] of tokens.entries()) {
    reason = job.accept(token, scored(token, i));
    if (reason !== undefined) break;
  }
  if (reason !== "stop") job.flushText(reason ?? "stop");
  return events;
}

function scored(token: number, i: number): SampledLogprob {
  return {
    bytes: PIECES[token]!,
    logprob: -0.5 - i,
    // Unordered, with a repeated piece (two control tokens) and an impossible one (-Infinity).
    top: [
      { bytes: PIECES[5]!, logprob: -3 },
      { bytes: PIECES[token]!, logprob: -0.5 - i },
      { bytes: new Uint8Array(), logprob: -1 },
      { bytes: PIECES[4]!, logprob: Number.NEGATIVE_INFINITY },
    ],
  };
}

const text = (events: TokenEvent[]) => events.map((e) => e.text).join("");
const entries = (events: TokenEvent[]): TokenLogprob[] => events.flatMap((e) => e.logprobs ?? []);
const bytesOf = (list: TokenLogprob[]) => Buffer.concat(list.map((e) => e.bytes));

describe("log-probabilities tied to the text emitted", () => {
  it("every event's entries spell exactly its text, whole tokens per event", () => {
    const events = run([0, 1, 2, 3, 4]);
    expect(text(events)).toBe("Hello world!");
    for (const e of events) expect(Buffer.from(bytesOf(e.logprobs ?? [])).toString()).toBe(e.text);
    expect(entries(events).map((e) => e.logprob)).toEqual([-0.5, -1.5, -2.5, -3.5, -4.5]);
  });

  it("sorts the alternatives, keeps each piece once (the likelier), and floors -Infinity", () => {
    const [first] = entries(run([0]));
    expect(first!.top).toEqual([
      { bytes: PIECES[0], logprob: -0.5 },
      { bytes: new Uint8Array(), logprob: -1 },
      { bytes: PIECES[4], logprob: LOGPROB_FLOOR },
    ]);
  });

  it("holds the parts of a character until it is whole, and keeps each token's own bytes", () => {
    const events = run([0, 6, 7, 4]);
    expect(text(events)).toBe("He👋!");
    expect(events.every((e) => !e.text.includes("\uFFFD"))).toBe(true);
    expect(entries(events).map((e) => [...e.bytes])).toEqual([[72, 101], [0xf0, 0x9f], [0x91, 0x8b], [33]]);
  });

  it("a stop string inside a token: that token keeps its bytes before it, later ones are dropped", () => {
    // " wor" holds "wor": the text ends before it, and " wor" is cut to " ".
    const events = run([0, 1, 2, 3], { stop: ["wor"] });
    expect(text(events)).toBe("Hello ");
    const list = entries(events);
    expect(list.map((e) => Buffer.from(e.bytes).toString())).toEqual(["He", "llo", " "]);
    expect(list[2]!.logprob).toBe(-2.5);
    // Split across tokens (" w" then "or"): the same text, " w" cut to " ", "or" dropped.
    const split = run([0, 1, 8, 9, 3], { stop: ["wor"] });
    expect(text(split)).toBe("Hello ");
    expect(entries(split).map((e) => Buffer.from(e.bytes).toString())).toEqual(["He", "llo", " "]);
  });

  it("tokens with no text keep their entries (empty bytes), also at the very end", () => {
    const events = run([0, 5, 1, 5]);
    expect(text(events)).toBe("Hello");
    expect(entries(events).map((e) => Buffer.from(e.bytes).toString())).toEqual(["He", "", "llo", ""]);
  });

  it("an unfinished character flushed at max_tokens is U+FFFD, and its token's bytes are that", () => {
    const events = run([0, 6], { maxTokens: 2 });
    expect(text(events)).toBe("He\uFFFD");
    expect(Buffer.from(bytesOf(entries(events))).toString()).toBe("He\uFFFD");
  });

  it("an engine that reports no figures for a token fails a job that asked for them", () => {
    const events: TokenEvent[] = [];
    const job = new TestJob(
      {
        id: "r",
        model: "m",
        input: { kind: "text", prompt: "x" },
        sampling: { temperature: 0, topP: 1, topK: 0, stop: [], maxTokens: 5, logprobs: 0 },
      },
      (e) => events.push(e),
    );
    job.detokenizer = new IncrementalDetokenizer(detokenizer);
    expect(() => job.accept(0)).toThrow(/reported no logprobs/);
  });
});
