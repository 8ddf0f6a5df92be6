// Helpers shared by the failure drills: greedy prompts long enough to interrupt, an SSE reader that
// records when each event arrived, and the money checks every drill ends with.
import type { UsageRecord } from "@darkbloom/protocol/admin/v1";
import { parseSse } from "@darkbloom/testing";
import { expect } from "vitest";
import {
  TESTBED_PRICES,
  type Testbed,
  type TestbedAccount,
  type TestbedProvider,
  waitUntil,
} from "../testbed/index.js";

/** Heavier variants (more repetitions) run only with DARKBLOOM_HEAVY_TESTS=1. */
export const HEAVY = process.env.DARKBLOOM_HEAVY_TESTS === "1";

/** The synthesized model every drill streams from. */
export const MODEL = "tiny";

/** A budget far above anything a drill spends ($100). */
export const CREDIT = 100_000_000n;

/** What a probe asks for: long enough that a stream is still running when the drill interrupts it. */
export const PROBE_MAX_TOKENS = 1500;

/** Greedy prompts tried in order; on the tiny model "hello there xx" runs to ~800 tokens. */
const CANDIDATE_PROMPTS = [
  "hello there xx",
  "tell me a long story about the sea",
  "count from one to one thousand",
  "the quick brown fox jumps over the lazy dog",
  "once upon a time",
  "zz yy xx ww vv uu tt",
];

/** The OpenAI error object, with all four fields (SPEC section 3). */
export interface OpenAiError {
  message: string;
  type: string;
  code: string | null;
  param: string | null;
}

/** A chat body sampled greedily (temperature 0: deterministic on one provider build and model file). */
export function greedyChat(
  prompt: string,
  o: { maxTokens?: number; stream?: boolean; includeUsage?: boolean; model?: string } = {},
): Record<string, unknown> {
  return {
    model: o.model ?? MODEL,
    messages: [{ role: "user", content: prompt }],
    temperature: 0,
    max_tokens: o.maxTokens ?? PROBE_MAX_TOKENS,
    ...(o.stream ? { stream: true } : {}),
    ...(o.stream && o.includeUsage ? { stream_options: { include_usage: true } } : {}),
  };
}

export interface Completion {
  providerId: string;
  requestId: string;
  text: string;
  promptTokens: number;
  completionTokens: number;
  finishReason: string;
}

/** One non-streaming greedy completion (throws unless HTTP 200). */
export async function complete(
  tb: Testbed,
  apiKey: string,
  prompt: string,
  maxTokens = PROBE_MAX_TOKENS,
  o: { headers?: Record<string, string>; model?: string } = {},
): Promise<Completion> {
  const res = await tb.chat(apiKey, greedyChat(prompt, { maxTokens, model: o.model ?? MODEL }), {
    signal: AbortSignal.timeout(60_000),
    headers: o.headers ?? {},
  });
  const body = (await res.json()) as {
    choices?: { message?: { content?: string | null }; finish_reason?: string }[];
    usage?: { prompt_tokens: number; completion_tokens: number };
  };
  if (res.status !== 200) throw new Error(`completion failed: HTTP ${res.status} ${JSON.stringify(body)}`);
  return {
    providerId: res.headers.get("x-provider-id") ?? "",
    requestId: res.headers.get("x-request-id") ?? "",
    text: body.choices?.[0]?.message?.content ?? "",
    promptTokens: body.usage?.prompt_tokens ?? 0,
    completionTokens: body.usage?.completion_tokens ?? 0,
    finishReason: body.choices?.[0]?.finish_reason ?? "",
  };
}

/** A greedy prompt whose completion is at least `minTokens` long, and that completion. */
export interface LongPrompt {
  prompt: string;
  completion: Completion;
}

/**
 * Probes the candidate prompts greedily (max_tokens PROBE_MAX_TOKENS) and returns the first whose
 * completion has at least `minTokens` tokens: at ~1000 tokens/s such a stream runs for half a second
 * or more, long enough to freeze its provider on the first chunk.
 */
export async function findLongPrompt(
  tb: Testbed,
  apiKey: string,
  minTokens = 500,
  model = MODEL,
): Promise<LongPrompt> {
  const seen: string[] = [];
  for (const prompt of CANDIDATE_PROMPTS) {
    const completion = await complete(tb, apiKey, prompt, PROBE_MAX_TOKENS, { model });
    if (completion.completionTokens >= minTokens) return { prompt, completion };
    seen.push(`${JSON.stringify(prompt)}: ${completion.completionTokens}`);
  }
  throw new Error(`no candidate prompt yields ${minTokens} greedy tokens on ${model} (${seen.join(", ")})`);
}

/** A streamed response as the consumer saw it. */
export interface StreamResult {
  status: number;
  headers: Headers;
  requestId: string;
  providerId: string;
  /** The body exactly as received. */
  raw: string;
  /** `data:` payloads in order (including "[DONE]"). */
  events: string[];
  /** Concatenated delta.content of choice 0. */
  content: string;
  /** Events with non-empty content (one event carries one or more tokens). */
  contentEvents: number;
  /** The error objects of SSE error events, or of the JSON error body of a non-200 answer. */
  errors: OpenAiError[];
  doneCount: number;
  usage: { prompt_tokens: number; completion_tokens: number } | undefined;
  /** Why reading the body failed (the connection dropped); undefined when it ended normally. */
  readError: Error | undefined;
  /** performance.now() when the headers, the first and last content event and the end arrived. */
  headersAt: number;
  firstContentAt: number | undefined;
  lastContentAt: number | undefined;
  endedAt: number;
}

export interface OpenStream {
  /**
   * Resolves with the response's X-Provider-Id when the first content event arrives (rejects if the
   * stream ends before).
   */
  firstContent: Promise<string>;
  /** Resolves when the body ends (normally or not); never rejects. */
  done: Promise<StreamResult>;
  /** Whether the body has ended. */
  readonly ended: boolean;
}

/**
 * Sends a streaming chat request and reads it as it arrives, recording when each part came. The
 * fetch carries an AbortSignal.timeout so that a stream left hanging fails the drill (as a read
 * error) instead of outliving it.
 */
export function openStream(
  tb: Testbed,
  apiKey: string,
  body: Record<string, unknown>,
  o: { timeoutMs?: number; headers?: Record<string, string> } = {},
): OpenStream {
  let resolveFirst: (providerId: string) => void = () => undefined;
  let rejectFirst: (e: Error) => void = () => undefined;
  const firstContent = new Promise<string>((resolve, reject) => {
    resolveFirst = resolve;
    rejectFirst = reject;
  });
  firstContent.catch(() => undefined);
  const started = performance.now();
  let ended = false;
  const done = (async (): Promise<StreamResult> => {
    const signal = AbortSignal.timeout(o.timeoutMs ?? 30_000);
    const result: StreamResult = {
      status: 0,
      headers: new Headers(),
      requestId: "",
      providerId: "",
      raw: "",
      events: [],
      content: "",
      contentEvents: 0,
      errors: [],
      doneCount: 0,
      usage: undefined,
      readError: undefined,
      headersAt: started,
      firstContentAt: undefined,
      lastContentAt: undefined,
      endedAt: started,
    };
    try {
      const res = await tb.chat(
        apiKey,
        { ...body, stream: true },
        { signal, ...(o.headers ? { headers: o.headers } : {}) },
      );
      result.status = res.status;
      result.headers = res.headers;
      result.requestId = res.headers.get("x-request-id") ?? "";
      result.providerId = res.headers.get("x-provider-id") ?? "";
      result.headersAt = performance.now();
      if (res.status !== 200 || !res.body) {
        result.raw = await res.text();
        const parsed = JSON.parse(result.raw) as { error?: OpenAiError };
        if (parsed.error) result.errors.push(parsed.error);
        return result;
      }
      const decoder = new TextDecoder();
      let pending = "";
      for await (const bytes of res.body) {
        const text = decoder.decode(bytes, { stream: true });
        result.raw += text;
        pending += text;
        for (let end = pending.indexOf("\n\n"); end >= 0; end = pending.indexOf("\n\n")) {
          const block = pending.slice(0, end);
          pending = pending.slice(end + 2);
          const data = block
            .split("\n")
            .filter((line) => line.startsWith("data:"))
            .map((line) => line.slice(5).trimStart())
            .join("\n");
          if (data !== "") onEvent(result, data, resolveFirst);
        }
      }
    } catch (e) {
      result.readError = e instanceof Error ? e : new Error(String(e));
    } finally {
      ended = true;
      result.endedAt = performance.now();
      rejectFirst(new Error("the stream ended before its first content event"));
    }
    return result;
  })();
  return {
    firstContent,
    done,
    get ended() {
      return ended;
    },
  };
}

function onEvent(result: StreamResult, data: string, firstContent: (providerId: string) => void): void {
  result.events.push(data);
  if (data === "[DONE]") {
    result.doneCount++;
    return;
  }
  const event = JSON.parse(data) as {
    error?: OpenAiError;
    choices?: { delta?: { content?: string | null } }[];
    usage?: { prompt_tokens: number; completion_tokens: number } | null;
  };
  if (event.error) result.errors.push(event.error);
  if (event.usage) result.usage = event.usage;
  const content = event.choices?.[0]?.delta?.content ?? "";
  if (content === "") return;
  const now = performance.now();
  result.content += content;
  result.contentEvents++;
  result.firstContentAt ??= now;
  result.lastContentAt = now;
  firstContent(result.providerId);
}

/** A stream that failed after its first byte: strict SSE, one error event in OpenAI's shape, one [DONE]. */
export function expectCleanStreamError(r: StreamResult): OpenAiError {
  expect(r.readError, "the stream ended cleanly").toBeUndefined();
  expect(r.status).toBe(200);
  expect(() => parseSse(r.raw)).not.toThrow();
  expect(r.doneCount).toBe(1);
  expect(r.events.at(-1)).toBe("[DONE]");
  expect(r.errors).toHaveLength(1);
  const error = r.errors[0]!;
  expectOpenAiErrorShape(error);
  // The error event is the last event before [DONE].
  expect(JSON.parse(r.events.at(-2) ?? "{}")).toEqual({ error });
  return error;
}

/** A stream that completed: strict SSE, no error, one [DONE]. */
export function expectCompleteStream(r: StreamResult): void {
  expect(r.readError, "the stream ended cleanly").toBeUndefined();
  expect(r.errors).toEqual([]);
  expect(r.status).toBe(200);
  expect(() => parseSse(r.raw)).not.toThrow();
  expect(r.doneCount).toBe(1);
  expect(r.events.at(-1)).toBe("[DONE]");
}

export function expectOpenAiErrorShape(error: unknown): void {
  expect(error).toEqual({
    message: expect.any(String),
    type: expect.any(String),
    code: expect.anything(),
    param: null,
  });
  expect(Object.keys(error as object).sort()).toEqual(["code", "message", "param", "type"]);
}

/** What `promptTokens` and `completionTokens` cost at TESTBED_PRICES (rounded up to a micro-dollar). */
export function cost(promptTokens: number, completionTokens: number): bigint {
  const numerator =
    BigInt(promptTokens) * TESTBED_PRICES.input + BigInt(completionTokens) * TESTBED_PRICES.output;
  return (numerator + 999_999n) / 1_000_000n;
}

/** The least a completed request costs (SPEC section 5). */
export const MIN_CHARGE = 100n;

/** What a completed request is charged. */
export function completedCharge(promptTokens: number, completionTokens: number): bigint {
  const c = cost(promptTokens, completionTokens);
  return c > MIN_CHARGE ? c : MIN_CHARGE;
}

/** The account's usage records (newest first, at most 500). */
export async function usageRecords(tb: Testbed, accountId: string): Promise<UsageRecord[]> {
  const records: UsageRecord[] = [];
  let pageToken = "";
  do {
    const page = await tb.admin.listUsage({ accountId, pageSize: 500, pageToken });
    records.push(...page.records);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return records;
}

/** The request's usage record once it is settled (settlement follows the response's end). */
export async function settledUsage(
  tb: Testbed,
  accountId: string,
  requestId: string,
  timeoutMs = 10_000,
): Promise<UsageRecord> {
  return (await tb.settledUsage(accountId, [requestId], timeoutMs)).get(requestId)!;
}

/**
 * A stream cut short after `content` reached the consumer was charged exactly for the prompt (the
 * coordinator's count with the model's vocabulary: the provider never reported its usage) and the
 * count of the text that reached the consumer, never more, and the balance moved by exactly that
 * charge. A greedy replay of the same prompt must begin with exactly the text received (it is what
 * the model produced; `replayKey`'s account pays for it).
 */
export async function expectPartialCharge(
  tb: Testbed,
  account: TestbedAccount,
  balanceBefore: bigint,
  stream: StreamResult,
  prompt: string,
  replayKey: string,
): Promise<UsageRecord> {
  const record = await settledUsage(tb, account.id, stream.requestId);
  expect(record.outcome).toBe("failed");
  expect(record.completionTokens).toBeGreaterThan(0);
  // The streams these drills cut ask for PROBE_MAX_TOKENS (greedyChat's default).
  const counts = await tb.counts(MODEL, prompt, stream.content, PROBE_MAX_TOKENS);
  expect(record.promptTokens).toBe(counts.prompt);
  expect(record.completionTokens).toBe(counts.completion);
  expect(record.chargedMicroUsd).toBe(cost(record.promptTokens, record.completionTokens));
  expect(balanceBefore - (await tb.balance(account.id))).toBe(record.chargedMicroUsd);
  // Sampled tokens are at most a few more than the text counts to (text-less tokens, non-canonical
  // splits); twice as many and some is plenty to replay past the point the stream was cut, and never
  // more than the stream itself was allowed (PROBE_MAX_TOKENS: a fast engine cut late asks for more
  // than the model's context holds).
  const replay = await complete(
    tb,
    replayKey,
    prompt,
    Math.min(2 * record.completionTokens + 16, PROBE_MAX_TOKENS),
  );
  expect(replay.text.startsWith(stream.content), divergence(replay.text, stream.content)).toBe(true);
  return record;
}

/** Where two texts part, for a failure message. */
function divergence(replay: string, received: string): string {
  let i = 0;
  while (i < replay.length && replay[i] === received[i]) i++;
  const around = (t: string) => JSON.stringify(t.slice(Math.max(0, i - 20), i + 20));
  return `the replay (${replay.length} chars) and the stream (${received.length} chars) part at char ${i}: ${around(replay)} vs ${around(received)}`;
}

/**
 * Polls until the ledger verifies with no discrepancy and no open reservation (recovery of orphaned
 * reservations is asynchronous), then asserts it.
 */
export async function expectLedgerClean(tb: Testbed, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await tb.verifyLedger();
    if ((v.ok && v.discrepancies.length === 0 && v.openReservations === 0n) || Date.now() > deadline) {
      expect(v.discrepancies).toEqual([]);
      expect(v.ok).toBe(true);
      expect(v.openReservations).toBe(0n);
      return;
    }
    await sleep(200);
  }
}

/** The provider id that served a request routed to a provider of `model` now, by polling the coordinator's in-flight slots. */
export async function inFlightProvider(tb: Testbed, model: string, timeoutMs = 5_000): Promise<string> {
  let id = "";
  await waitUntil(
    async () => {
      const { providers } = await tb.admin.listProviders({ model });
      id = providers.find((p) => p.busySlots > 0)?.providerId ?? "";
      return id !== "";
    },
    timeoutMs,
    `a request in flight on a provider of ${model}`,
  );
  return id;
}

/** The testbed's provider processes by their current provider id (session ids change on reconnect). */
export async function providersById(tb: Testbed): Promise<Map<string, TestbedProvider>> {
  const { providers } = await tb.admin.listProviders({});
  const byMachine = new Map<string, TestbedProvider>();
  for (const p of tb.providers) {
    const machineId = await p.machineId().catch(() => "");
    if (machineId) byMachine.set(machineId, p);
  }
  const map = new Map<string, TestbedProvider>();
  for (const summary of providers) {
    const p = byMachine.get(summary.machineId);
    if (p) map.set(summary.providerId, p);
  }
  return map;
}

/** The provider id the coordinator knows a testbed provider by now ("" when it is not connected). */
export async function providerIdOf(tb: Testbed, provider: TestbedProvider): Promise<string> {
  const machineId = await provider.machineId();
  const { providers } = await tb.admin.listProviders({});
  return providers.find((p) => p.machineId === machineId)?.providerId ?? "";
}

/** A request the coordinator dispatched to a frozen provider (which has not answered it). */
export interface FrozenDispatch {
  frozen: TestbedProvider;
  /** The frozen provider's id (as it was when frozen). */
  frozenId: string;
  stream: OpenStream;
}

/**
 * Freezes one of `candidates` (SIGSTOP) and opens a stream (`open`) until the coordinator dispatches
 * one to the frozen provider: the coordinator sees the dispatch (a busy slot) but no byte comes back.
 * Requests routed to a running provider instead are read to their end (with the frozen one resumed)
 * and the next attempt freezes the next candidate, so a cost model that prefers one of them cannot
 * starve the drill. Returns with the provider still frozen.
 */
export async function dispatchToFrozen(
  tb: Testbed,
  candidates: readonly TestbedProvider[],
  open: () => OpenStream,
  attempts = 10,
): Promise<FrozenDispatch> {
  const model = candidates[0]?.models[0] ?? MODEL;
  for (let attempt = 0; attempt < attempts; attempt++) {
    const frozen = candidates[attempt % candidates.length]!;
    const frozenId = await providerIdOf(tb, frozen);
    await frozen.pause();
    const stream = open();
    const inFlight = inFlightProvider(tb, model);
    inFlight.catch(() => undefined);
    // Dispatched (a slot is taken) before any byte, or already streaming from a running provider.
    const routedTo = await Promise.race([inFlight, stream.firstContent]);
    if (routedTo === frozenId) return { frozen, frozenId, stream };
    await frozen.resume();
    const r = await stream.done;
    expect(r.errors).toEqual([]);
  }
  throw new Error(`no request was routed to a frozen provider in ${attempts} attempts`);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
