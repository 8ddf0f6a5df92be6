/**
 * Log-probabilities as OpenAI's API shows them, written by the coordinator and read back by the
 * verifier (one copy of both directions, so a response always reads back as what was signed).
 *
 * What a provider reports for each sampled token, and the response signature covers (version 3), is
 * a SignedLogprob: the token's bytes as the text shows them, its log-probability under the model's
 * raw distribution as an IEEE-754 binary32 value, and the most likely alternatives in canonical
 * order (compareTop). The two shapes shown:
 * - chat: `logprobs: {content: [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}],
 *   refusal: null}`. `token` is the bytes decoded as UTF-8 (U+FFFD for a part of a character) and
 *   carries nothing of its own: the verifier requires it to be exactly that decoding.
 * - completions (legacy): `logprobs: {tokens, token_logprobs, top_logprobs: [{token: logprob}],
 *   text_offset}`. It has no bytes, so a token whose bytes are not whole UTF-8 characters (or whose
 *   text begins with "bytes:") is written as OpenAI writes one, "bytes:\xe2\x80", which reads back
 *   exactly. `text_offset` counts the characters (code points) before each token's first byte.
 *   Alternatives are an object, whose key order a JSON reader may change ("1" sorts first in
 *   JavaScript), which is why their order is canonical rather than the provider's.
 * Every logprob is written as the binary32 value itself (as a JSON number it reads back as the same
 * double), so a number changed in its last digits is a different value, not a rounding.
 *
 * This module is portable (no Node API), so a browser reads logprobs back with the same code.
 */

/**
 * The lowest figure written: JSON has no -Infinity, so what is less likely than this is shown as
 * this (vLLM's floor too). Providers floor their figures here; the coordinator refuses lower ones.
 */
export const LOGPROB_FLOOR = -9999;

/** One of the most likely tokens at a position. */
export interface SignedTopLogprob {
  token: Uint8Array;
  /** A binary32 value (Math.fround of itself), at most 0. */
  logprob: number;
}

/** One sampled token of a choice's content. */
export interface SignedLogprob extends SignedTopLogprob {
  /** Most likely first, in compareTop's order; each token's bytes once. */
  top: readonly SignedTopLogprob[];
}

/**
 * The canonical order of alternatives: most likely first; equal log-probabilities by their bytes
 * (unsigned, shorter first when one is a prefix of the other).
 */
export function compareTop(a: SignedTopLogprob, b: SignedTopLogprob): number {
  if (a.logprob !== b.logprob) return b.logprob > a.logprob ? 1 : -1;
  const n = Math.min(a.token.byteLength, b.token.byteLength);
  for (let i = 0; i < n; i++) {
    const d = (a.token[i] as number) - (b.token[i] as number);
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return Math.sign(a.token.byteLength - b.token.byteLength);
}

const lossy = new TextDecoder("utf-8");
const strict = new TextDecoder("utf-8", { fatal: true });
const encoder = new TextEncoder();

/** The token's text as chat shows it: its bytes decoded, U+FFFD for what is part of a character. */
export function tokenText(bytes: Uint8Array): string {
  return lossy.decode(bytes);
}

/** The token as the legacy completions API shows it: its text, or "bytes:\xNN…" (see the module comment). */
export function legacyToken(bytes: Uint8Array): string {
  let text: string | undefined;
  try {
    text = strict.decode(bytes);
  } catch {
    text = undefined;
  }
  if (text !== undefined && !text.startsWith("bytes:")) return text;
  return `bytes:${Array.from(bytes, (b) => `\\x${b.toString(16).padStart(2, "0")}`).join("")}`;
}

/** The bytes of a legacy token string (legacyToken's inverse); throws on a malformed "bytes:" form. */
export function legacyTokenBytes(token: string): Uint8Array {
  if (!token.startsWith("bytes:")) return encoder.encode(token);
  const hex = token.slice(6);
  if (!/^(\\x[0-9a-f]{2})*$/.test(hex)) throw new Error(`${JSON.stringify(token)} is not a bytes: token`);
  const out = new Uint8Array(hex.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(hex.slice(i * 4 + 2, i * 4 + 4), 16);
  return out;
}

/** Characters (code points) `bytes` begins or holds: its bytes that are not UTF-8 continuation bytes. */
export function characterStarts(bytes: Uint8Array): number {
  let n = 0;
  for (const b of bytes) if ((b & 0xc0) !== 0x80) n++;
  return n;
}

/** A chat choice's (or delta's) `logprobs` object. */
export function chatLogprobs(entries: readonly SignedLogprob[]): object {
  return {
    content: entries.map((e) => ({
      token: tokenText(e.token),
      logprob: e.logprob,
      bytes: Array.from(e.token),
      top_logprobs: e.top.map((t) => ({
        token: tokenText(t.token),
        logprob: t.logprob,
        bytes: Array.from(t.token),
      })),
    })),
    refusal: null,
  };
}

/**
 * A completions choice's (or chunk's) `logprobs` object; `offset` is the characters of the choice's
 * text before these tokens (0 for a whole choice; a stream's running count). Returns the object and
 * the offset after them.
 */
export function completionLogprobs(
  entries: readonly SignedLogprob[],
  offset = 0,
): { logprobs: object; offset: number } {
  const textOffset: number[] = [];
  for (const e of entries) {
    textOffset.push(offset);
    offset += characterStarts(e.token);
  }
  const logprobs = {
    tokens: entries.map((e) => legacyToken(e.token)),
    token_logprobs: entries.map((e) => e.logprob),
    top_logprobs: entries.map((e) => Object.fromEntries(e.top.map((t) => [legacyToken(t.token), t.logprob]))),
    text_offset: textOffset,
  };
  return { logprobs, offset };
}

type Json = Record<string, unknown>;

const CHAT_FIELDS = new Set(["content", "refusal"]);
const ENTRY_FIELDS = new Set(["token", "logprob", "bytes", "top_logprobs"]);
const TOP_FIELDS = new Set(["token", "logprob", "bytes"]);
const COMPLETION_FIELDS = new Set(["tokens", "token_logprobs", "top_logprobs", "text_offset"]);

/**
 * A chat choice's or delta's `logprobs` read back (chatLogprobs' inverse, strictly: every field is
 * what chatLogprobs would write for the entries read). Null when absent or null.
 */
export function readChatLogprobs(value: unknown, where: string): SignedLogprob[] | null {
  if (value === undefined || value === null) return null;
  const o = object(value, `${where} logprobs`);
  only(o, CHAT_FIELDS, `${where} logprobs`);
  if (
    o.refusal !== undefined &&
    o.refusal !== null &&
    !(Array.isArray(o.refusal) && o.refusal.length === 0)
  ) {
    throw new Error(`${where} logprobs.refusal holds tokens, which no response signature covers`);
  }
  if (o.content === undefined || o.content === null) return [];
  return list(o.content, `${where} logprobs.content`).map((value, i) => {
    const what = `${where} logprobs.content[${i}]`;
    const e = object(value, what);
    only(e, ENTRY_FIELDS, what);
    const entry = shownToken(e, what);
    const top = list(e.top_logprobs ?? [], `${what}.top_logprobs`).map((t, k) => {
      const w = `${what}.top_logprobs[${k}]`;
      const o = object(t, w);
      only(o, TOP_FIELDS, w);
      return shownToken(o, w);
    });
    return { ...entry, top };
  });
}

/**
 * A completions choice's or chunk's `logprobs` read back (completionLogprobs' inverse); `offset` as
 * there. Null when absent or null.
 */
export function readCompletionLogprobs(
  value: unknown,
  where: string,
  offset = 0,
): { entries: SignedLogprob[]; offset: number } | null {
  if (value === undefined || value === null) return null;
  const o = object(value, `${where} logprobs`);
  only(o, COMPLETION_FIELDS, `${where} logprobs`);
  const tokens = list(o.tokens ?? [], `${where} logprobs.tokens`);
  const values = list(o.token_logprobs ?? [], `${where} logprobs.token_logprobs`);
  const tops = list(o.top_logprobs ?? [], `${where} logprobs.top_logprobs`);
  const offsets = list(o.text_offset ?? [], `${where} logprobs.text_offset`);
  if (values.length !== tokens.length || tops.length !== tokens.length || offsets.length !== tokens.length) {
    throw new Error(`${where} logprobs lists are not all ${tokens.length} long`);
  }
  const entries: SignedLogprob[] = tokens.map((token, i) => {
    const what = `${where} logprobs token ${i}`;
    if (typeof token !== "string") throw new Error(`${what} is not text`);
    if (offsets[i] !== offset)
      throw new Error(`${what}'s text_offset is ${JSON.stringify(offsets[i])}, not ${offset}`);
    const bytes = readLegacy(token, what);
    offset += characterStarts(bytes);
    const alternatives = object(tops[i], `${what}'s top_logprobs`);
    const top = Object.entries(alternatives)
      .map(([t, v]) => ({
        token: readLegacy(t, `${what}'s alternative`),
        logprob: binary32(v, `${what}'s alternative`),
      }))
      .sort(compareTop);
    return { token: bytes, logprob: binary32(values[i], what), top };
  });
  return { entries, offset };
}

function readLegacy(token: string, what: string): Uint8Array {
  try {
    const bytes = legacyTokenBytes(token);
    // Only the one way legacyToken writes these bytes reads back as them.
    if (legacyToken(bytes) !== token)
      throw new Error(`${JSON.stringify(token)} is not how its bytes are written`);
    return bytes;
  } catch (e) {
    throw new Error(`${what}: ${(e as Error).message}`);
  }
}

/** A chat entry's token, logprob and bytes: the token must be exactly its bytes' text. */
function shownToken(o: Json, what: string): SignedTopLogprob {
  const bytes = list(o.bytes, `${what}.bytes`);
  if (!bytes.every((b) => Number.isInteger(b) && (b as number) >= 0 && (b as number) <= 255)) {
    throw new Error(`${what}.bytes is not a list of bytes`);
  }
  const token = Uint8Array.from(bytes as number[]);
  if (o.token !== tokenText(token)) throw new Error(`${what}.token is not the text of its bytes`);
  return { token, logprob: binary32(o.logprob, what) };
}

/** A log-probability as written: a binary32 value at most 0 (-Infinity is never shown). */
function binary32(value: unknown, what: string): number {
  if (typeof value !== "number" || Math.fround(value) !== value || !(value <= 0) || !Number.isFinite(value)) {
    throw new Error(`${what}'s logprob ${JSON.stringify(value)} is not a binary32 value at most 0`);
  }
  return value;
}

function only(o: Json, known: ReadonlySet<string>, where: string): void {
  for (const [k, v] of Object.entries(o)) {
    if (known.has(k) || v === null || v === undefined) continue;
    throw new Error(`${where} carries ${k}, which no response signature covers`);
  }
}

function list(value: unknown, what: string): unknown[] {
  if (!Array.isArray(value)) throw new Error(`${what} is not a list`);
  return value;
}

function object(value: unknown, what: string): Json {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Error(`${what} is not a JSON object`);
  }
  return value as Json;
}
