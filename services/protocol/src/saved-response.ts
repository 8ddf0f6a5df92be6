import { readChatLogprobs, readCompletionLogprobs, type SignedLogprob } from "./logprobs.js";
import { type SignedChoice, type SignedToolCall, type SignedUsage, U32_MAX } from "./response-record.js";

/**
 * Reads what a response signature covers out of a saved response, the way a consumer's code would
 * read the response: a forgery has to change what the verifier reads, or it changes nothing a
 * reader sees. Everything a reader could take for the provider's output must be covered, so the
 * reader refuses rather than skips: choice indices that are not the integers 0..n-1, each exactly
 * once; a chat message that is not the assistant's; logprobs not exactly as logprobs.ts writes them;
 * and any other field of a choice, message, delta or usage that is present and not null (it would be
 * shown unsigned).
 */

/** What a saved response holds, before the proof is checked. */
export interface SavedResponse {
  model: string;
  /** In index order 0..n-1. */
  choices: SignedChoice[];
  /** Every usage object the response itself carries (a stream's usage chunk, a body's usage). */
  usages: SignedUsage[];
  /** The `darkbloom` object, unparsed. */
  proof: unknown;
}

type Json = Record<string, unknown>;

const CHOICE_FIELDS = new Set(["index", "message", "delta", "text", "logprobs", "finish_reason"]);
const MESSAGE_FIELDS = new Set(["role", "content", "refusal", "tool_calls"]);
const USAGE_FIELDS = new Set(["prompt_tokens", "completion_tokens", "total_tokens"]);

/**
 * A saved response: a non-streaming body (parsed JSON, its text or bytes) or the text of an SSE
 * stream. Throws an Error whose message says what is wrong with it.
 */
export function readSavedResponse(saved: unknown): SavedResponse {
  if (saved instanceof Uint8Array) saved = new TextDecoder().decode(saved);
  if (typeof saved === "string") {
    const trimmed = saved.trimStart();
    if (trimmed.startsWith("data:") || trimmed.startsWith(":") || trimmed.startsWith("event:")) {
      return readStream(saved);
    }
    try {
      saved = JSON.parse(saved);
    } catch {
      throw new Error("the saved response is neither JSON nor an SSE stream");
    }
  }
  if (!isObject(saved)) throw new Error("the saved response is not a JSON object");
  return readBody(saved);
}

export function sameUsage(a: SignedUsage, b: SignedUsage): boolean {
  return a.promptTokens === b.promptTokens && a.completionTokens === b.completionTokens;
}

function readBody(body: Json): SavedResponse {
  if (typeof body.model !== "string") throw new Error("the saved response has no model");
  if (!Array.isArray(body.choices)) throw new Error("the saved response has no choices");
  const byIndex = new Map<number, SignedChoice>();
  for (const [position, value] of (body.choices as unknown[]).entries()) {
    const c = object(value, `choices[${position}]`);
    const index = choiceIndex(c.index, `choices[${position}].index`);
    if (byIndex.has(index)) throw new Error(`choice index ${index} appears more than once`);
    uncovered(c, CHOICE_FIELDS, `choice ${index}`);
    if (c.delta !== undefined && c.delta !== null) throw new Error(`choice ${index} is a stream delta`);
    let content: string | null;
    let logprobs: SignedLogprob[] | null;
    let refusal: string | null = null;
    let toolCalls: SignedToolCall[] = [];
    if (c.message !== undefined) {
      if (c.text !== undefined) throw new Error(`choice ${index} has both a message and a text`);
      const m = object(c.message, `choice ${index} message`);
      assistant(m, index);
      uncovered(m, MESSAGE_FIELDS, `choice ${index} message`);
      content = nullableString(m.content, `choice ${index} content`);
      refusal = nullableString(m.refusal, `choice ${index} refusal`);
      toolCalls = readToolCalls(m.tool_calls, index);
      logprobs = readChatLogprobs(c.logprobs, `choice ${index}`);
    } else {
      content = nullableString(c.text, `choice ${index} text`);
      logprobs = readCompletionLogprobs(c.logprobs, `choice ${index}`)?.entries ?? null;
    }
    if (typeof c.finish_reason !== "string") throw new Error(`choice ${index} has no finish_reason`);
    byIndex.set(index, { index, content, refusal, toolCalls, logprobs, finishReason: c.finish_reason });
  }
  const usages = body.usage === undefined || body.usage === null ? [] : [readUsage(body.usage)];
  return { model: body.model, choices: inOrder(byIndex), usages, proof: body.darkbloom };
}

/** A choice of a stream as its deltas build it. */
interface StreamChoice {
  content: string | null;
  refusal: string | null;
  toolCalls: Map<number, SignedToolCall>;
  /** Null until a delta carries logprobs (a stream of a request that asked has them on every delta). */
  logprobs: SignedLogprob[] | null;
  /** A completions stream's characters so far (its text_offset). */
  offset: number;
  finishReason: string | undefined;
}

/** Reassembles a saved SSE stream: deltas concatenated per choice index, in event order. */
/**
 * The data of each event of an SSE transcript (its `data:` lines joined), skipping events with none
 * (comments such as keep-alives). A transcript cut inside an event yields that event's data so far:
 * a reader that shows a stream as it arrives passes complete events only (up to the last blank line).
 */
export function* sseData(transcript: string): Generator<string> {
  for (const event of transcript.split(/\r?\n\r?\n/)) {
    const data = event
      .split(/\r?\n/)
      .filter((l) => l.startsWith("data:"))
      .map((l) => l.slice(5).replace(/^ /, ""))
      .join("\n");
    if (data !== "") yield data;
  }
}

function readStream(transcript: string): SavedResponse {
  const choices = new Map<number, StreamChoice>();
  const usages: SignedUsage[] = [];
  let model: string | undefined;
  let proof: unknown;
  let done = false;
  for (const data of sseData(transcript)) {
    if (done) throw new Error("the SSE stream has events after data: [DONE]");
    if (data === "[DONE]") {
      done = true;
      continue;
    }
    let o: Json;
    try {
      o = object(JSON.parse(data), "an SSE event");
    } catch {
      throw new Error("the SSE stream has an event that is not a JSON object");
    }
    if (o.error !== undefined) throw new Error("the SSE stream ended with an error event");
    if (o.darkbloom !== undefined) {
      if (proof !== undefined) throw new Error("the SSE stream has more than one darkbloom object");
      proof = o.darkbloom;
    }
    if (typeof o.model === "string") {
      if (model !== undefined && model !== o.model)
        throw new Error("the SSE stream names more than one model");
      model = o.model;
    }
    if (o.usage !== undefined && o.usage !== null) usages.push(readUsage(o.usage));
    if (o.choices === undefined) continue;
    if (!Array.isArray(o.choices)) throw new Error("an SSE event's choices is not a list");
    for (const value of o.choices as unknown[]) readDelta(value, choices);
  }
  if (!done) throw new Error("the SSE stream is incomplete (no data: [DONE])");
  if (model === undefined) throw new Error("the SSE stream names no model");
  const byIndex = new Map<number, SignedChoice>();
  for (const [index, c] of choices) {
    if (c.finishReason === undefined) throw new Error(`choice ${index} has no finish_reason`);
    const toolCalls = inOrder(c.toolCalls, "tool call");
    byIndex.set(index, {
      index,
      content: c.content,
      refusal: c.refusal,
      toolCalls,
      logprobs: c.logprobs,
      finishReason: c.finishReason,
    });
  }
  return { model, choices: inOrder(byIndex), usages, proof };
}

function readDelta(value: unknown, choices: Map<number, StreamChoice>): void {
  const c = object(value, "a streamed choice");
  const index = choiceIndex(c.index, "a streamed choice's index");
  uncovered(c, CHOICE_FIELDS, `choice ${index}`);
  if (c.message !== undefined && c.message !== null) throw new Error(`choice ${index} is not a stream delta`);
  let choice = choices.get(index);
  if (!choice) {
    choice = {
      content: null,
      refusal: null,
      toolCalls: new Map(),
      logprobs: null,
      offset: 0,
      finishReason: undefined,
    };
    choices.set(index, choice);
  }
  let logprobs: SignedLogprob[] | null;
  if (c.delta !== undefined) logprobs = readChatLogprobs(c.logprobs, `choice ${index}`);
  else {
    const read = readCompletionLogprobs(c.logprobs, `choice ${index}`, choice.offset);
    if (read) choice.offset = read.offset;
    logprobs = read?.entries ?? null;
  }
  if (logprobs !== null) {
    choice.logprobs ??= [];
    choice.logprobs.push(...logprobs);
  }
  const append = (current: string | null, part: unknown, what: string) => {
    const p = nullableString(part, `choice ${index} ${what}`);
    return p === null ? current : (current ?? "") + p;
  };
  if (c.delta !== undefined) {
    if (c.text !== undefined) throw new Error(`choice ${index} has both a delta and a text`);
    const d = object(c.delta, `choice ${index} delta`);
    assistant(d, index);
    uncovered(d, MESSAGE_FIELDS, `choice ${index} delta`);
    choice.content = append(choice.content, d.content, "content");
    choice.refusal = append(choice.refusal, d.refusal, "refusal");
    if (d.tool_calls !== undefined && d.tool_calls !== null) {
      if (!Array.isArray(d.tool_calls)) throw new Error(`choice ${index} tool_calls is not a list`);
      for (const t of d.tool_calls as unknown[]) {
        const part = object(t, `choice ${index} tool call`);
        const at = choiceIndex(part.index, `choice ${index} tool call index`);
        const fn =
          part.function === undefined ? {} : object(part.function, `choice ${index} tool call function`);
        const call = choice.toolCalls.get(at) ?? { id: "", type: "", name: "", arguments: "" };
        call.id += piece(part.id, `choice ${index} tool call id`);
        call.type += piece(part.type, `choice ${index} tool call type`);
        call.name += piece(fn.name, `choice ${index} tool call name`);
        call.arguments += piece(fn.arguments, `choice ${index} tool call arguments`);
        choice.toolCalls.set(at, call);
      }
    }
  } else {
    choice.content = append(choice.content, c.text, "text");
  }
  if (c.finish_reason !== undefined && c.finish_reason !== null) {
    if (typeof c.finish_reason !== "string") throw new Error(`choice ${index} finish_reason is not text`);
    if (choice.finishReason !== undefined) throw new Error(`choice ${index} finishes more than once`);
    choice.finishReason = c.finish_reason;
  }
}

function readToolCalls(value: unknown, index: number): SignedToolCall[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new Error(`choice ${index} tool_calls is not a list`);
  return (value as unknown[]).map((t) => {
    const call = object(t, `choice ${index} tool call`);
    const fn = object(call.function, `choice ${index} tool call function`);
    const field = (v: unknown, what: string) => text(v, `choice ${index} tool call ${what}`);
    return {
      id: field(call.id, "id"),
      type: field(call.type, "type"),
      name: field(fn.name, "name"),
      arguments: field(fn.arguments, "arguments"),
    };
  });
}

function readUsage(value: unknown): SignedUsage {
  const u = object(value, "usage");
  uncovered(u, USAGE_FIELDS, "usage");
  const tokens = (k: string) => {
    const v = u[k];
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > U32_MAX) {
      throw new Error(`usage.${k} is not a token count`);
    }
    return v;
  };
  const usage = { promptTokens: tokens("prompt_tokens"), completionTokens: tokens("completion_tokens") };
  if (u.total_tokens !== undefined && u.total_tokens !== usage.promptTokens + usage.completionTokens) {
    throw new Error("usage.total_tokens is not prompt_tokens + completion_tokens");
  }
  return usage;
}

/** The values of a map keyed 0..n-1, in key order; any other set of keys is refused. */
function inOrder<T>(byIndex: Map<number, T>, what = "choice"): T[] {
  const out: T[] = [];
  for (let i = 0; i < byIndex.size; i++) {
    const value = byIndex.get(i);
    if (value === undefined)
      throw new Error(`${what} index ${i} is missing: indices must be 0..${byIndex.size - 1}`);
    out.push(value);
  }
  return out;
}

function choiceIndex(value: unknown, what: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > U32_MAX) {
    throw new Error(`${what} is ${JSON.stringify(value)}, not an integer index`);
  }
  return value;
}

function assistant(message: Json, index: number): void {
  if (message.role !== undefined && message.role !== "assistant") {
    throw new Error(`choice ${index} is not an assistant message`);
  }
}

/** Refuses fields outside `known` that hold something: nothing signed would back them. */
function uncovered(o: Json, known: ReadonlySet<string>, where: string): void {
  for (const [k, v] of Object.entries(o)) {
    if (known.has(k) || v === null || v === undefined || (Array.isArray(v) && v.length === 0)) continue;
    throw new Error(`${where} carries ${k}, which no response signature covers`);
  }
}

function nullableString(value: unknown, what: string): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== "string") throw new Error(`${what} is not text`);
  return value;
}

/** Required text. */
function text(value: unknown, what: string): string {
  if (typeof value !== "string") throw new Error(`${what} is not text`);
  return value;
}

/** A piece of a streamed field: absent is "". */
function piece(value: unknown, what: string): string {
  return value === undefined ? "" : text(value, what);
}

function object(value: unknown, what: string): Json {
  if (!isObject(value)) throw new Error(`${what} is not a JSON object`);
  return value;
}

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
