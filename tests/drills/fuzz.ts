// Input generators for the malformed-input drill: a seeded PRNG (a failing run is replayed with
// DARKBLOOM_FUZZ_SEED), a grammar-based mutator of OpenAI request bodies, and malformed provider
// streams (Connect/gRPC envelopes carrying garbage or structurally valid nonsense).
import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { PROTOCOL_VERSION } from "@darkbloom/protocol";
import {
  AcceleratorKind,
  ConnectRequestSchema,
  MemoryPressure,
  ProviderState,
  SignerKind,
  ThermalState,
} from "@darkbloom/protocol/provider/v1";
import { RESPONSE_SIGNATURE_VERSION } from "@darkbloom/protocol/verifiable-response";

// ---------------------------------------------------------------------------------------------
// Seeded randomness

/** sfc32 seeded through splitmix32: fast, 32-bit state words, good enough for test inputs. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(readonly seed: number) {
    let s = seed >>> 0;
    const split = (): number => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = split();
    this.b = split();
    this.c = split();
    this.d = split();
    for (let i = 0; i < 12; i++) this.u32();
  }

  u32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t;
  }

  /** A float in [0, 1). */
  next(): number {
    return this.u32() / 2 ** 32;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** An integer in [min, max]. */
  range(min: number, max: number): number {
    return min + this.int(max - min + 1);
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error("pick from an empty list");
    return items[this.int(items.length)] as T;
  }

  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.u32() & 0xff;
    return out;
  }

  /** An independent generator derived from this one (so one stream's length does not shift another). */
  fork(): Rng {
    return new Rng(this.u32());
  }
}

/** The run's seed: DARKBLOOM_FUZZ_SEED (decimal or 0x-hex) when set, else a fresh random one. */
export function fuzzSeed(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.DARKBLOOM_FUZZ_SEED?.trim();
  if (raw) {
    const value = Number(raw);
    if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
      throw new Error(`DARKBLOOM_FUZZ_SEED must be an integer in [0, 2^32), got ${JSON.stringify(raw)}`);
    }
    return value;
  }
  return Math.floor(Math.random() * 2 ** 32);
}

// ---------------------------------------------------------------------------------------------
// JSON with the things JSON.stringify cannot write: duplicate keys, 1e309, verbatim fragments

/** An object as an ordered list of entries, so a key may appear twice. */
export class JObject {
  constructor(readonly entries: [string, JValue][] = []) {}

  has(key: string): boolean {
    return this.entries.some(([k]) => k === key);
  }

  /** Replaces every occurrence of `key` (or appends it). */
  set(key: string, value: JValue): void {
    const i = this.entries.findIndex(([k]) => k === key);
    if (i === -1) {
      this.entries.push([key, value]);
      return;
    }
    this.entries[i] = [key, value];
    for (let j = this.entries.length - 1; j > i; j--)
      if (this.entries[j]?.[0] === key) this.entries.splice(j, 1);
  }

  delete(key: string): void {
    for (let j = this.entries.length - 1; j >= 0; j--)
      if (this.entries[j]?.[0] === key) this.entries.splice(j, 1);
  }
}

/** A fragment written verbatim (a number JSON.stringify cannot produce, deep nesting). */
export class JRaw {
  constructor(readonly text: string) {}
}

export type JValue = null | boolean | number | string | JValue[] | JObject | JRaw;

export function serialize(v: JValue): string {
  if (v instanceof JRaw) return v.text;
  if (v instanceof JObject) {
    return `{${v.entries.map(([k, x]) => `${JSON.stringify(k)}:${serialize(x)}`).join(",")}}`;
  }
  if (Array.isArray(v)) return `[${v.map(serialize).join(",")}]`;
  return JSON.stringify(v);
}

/** A plain JSON-like literal as a JValue (objects become JObjects). */
export function j(v: unknown): JValue {
  if (v instanceof JRaw || v instanceof JObject) return v;
  if (v === null || typeof v === "boolean" || typeof v === "number" || typeof v === "string") return v;
  if (Array.isArray(v)) return v.map(j);
  if (typeof v === "object") return new JObject(Object.entries(v).map(([k, x]) => [k, j(x)]));
  throw new Error(`not JSON: ${String(v)}`);
}

const raw = (text: string) => new JRaw(text);

/** Arrays nested `depth` deep (`[[[…]]]`), written without recursion. */
export function deepArray(depth: number): JRaw {
  return raw(`${"[".repeat(depth)}${"]".repeat(depth)}`);
}

/** Objects nested `depth` deep (`{"a":{"a":…1}}`). */
export function deepObject(depth: number): JRaw {
  return raw(`${'{"a":'.repeat(depth)}1${"}".repeat(depth)}`);
}

// ---------------------------------------------------------------------------------------------
// HTTP cases

export type AuthMode =
  | "account"
  | "money-account"
  | "none"
  | "bare-bearer"
  | "basic"
  | "unknown-key"
  | "long-key";

/** What the drill requires of one answer beyond "a 4xx in OpenAI's error shape". */
export interface HttpExpectation {
  status?: number;
  code?: string;
  /** A rate-limited answer (429) is also correct (the money endpoints' limiter stays on). */
  allow429?: boolean;
}

export interface HttpCase {
  id: number;
  /** The mutations applied, e.g. "chat|max_tokens=bad|extra-field|bom". */
  label: string;
  method: string;
  path: string;
  auth: AuthMode;
  /** undefined: no Content-Type header. */
  contentType: string | undefined;
  body: Uint8Array | undefined;
  /** The body asked for a stream (an SSE error event is then also a correct answer). */
  stream: boolean;
  expect: HttpExpectation;
}

const enc = new TextEncoder();

/** Per field, values the coordinator must refuse with 400 whatever else the body says. */
const BAD_VALUES: Record<string, readonly JValue[]> = {
  model: [null, "", 5, true, j([]), j({}), "x".repeat(257), j(["tiny"])],
  stream: ["true", 1, 0, j([]), j({}), "false"],
  max_tokens: [
    0,
    -1,
    1.5,
    "10",
    true,
    j([]),
    j({}),
    1_000_001,
    raw("1e309"),
    raw("-1e309"),
    raw("9007199254740993"),
    raw("-0.5"),
    raw("1e-7"),
  ],
  n: [0, -1, 9, 1.5, "2", true, raw("1e309"), raw("9007199254740993")],
  temperature: [-0.01, 2.01, "0.5", true, j([]), raw("1e309"), raw("-1e309"), 1e6],
  top_p: [-0.5, 1.01, "1", j({})],
  top_k: [-1, 0.5, "3", 1_000_001],
  presence_penalty: [-2.01, 2.5, "1", raw("1e309")],
  frequency_penalty: [-3, 2.01, false],
  seed: [1.5, "42", true, raw("9007199254740993"), raw("-9007199254740993"), raw("1e309")],
  stop: [5, true, j({}), j([1]), j([null]), j(["a", "b", "c", "d", "e"]), j([["a"]])],
  user: [5, true, j({}), j(["u"])],
  best_of: [2, 0, 9, "1", 1.5],
  response_format: [
    5,
    "json_object",
    j([]),
    j({ type: "xml" }),
    j({ type: "json_schema" }),
    j({ type: "json_schema", json_schema: { name: "a b" } }),
    j({ type: "json_schema", json_schema: { name: "s", schema: { type: "string", pattern: "(?=a)" } } }),
    j({ type: "json_schema", json_schema: { name: "s", strict: true, schema: { type: "object" } } }),
    j({ type: "json_schema", json_schema: { name: "s", schema: { $ref: "#/$defs/none" } } }),
  ],
  logit_bias: [5, "x", j([1]), j({ x: 1 }), j({ "1": 101 }), j({ "1": "2" }), j({ "-1": 1 })],
  tools: [
    5,
    j({}),
    j([{ type: "retrieval" }]),
    j([{ type: "function", function: { name: "a b" } }]),
    j([
      {
        type: "function",
        function: {
          name: "f",
          parameters: { type: "object", properties: { x: { type: "string", pattern: "(?=a)" } } },
        },
      },
    ]),
    j([{ type: "function", function: { name: "f", parameters: { type: "string" } } }]),
  ],
  // Without tools (or on /v1/completions, which has none).
  tool_choice: ["required", 5, "sometimes", j({ type: "function", function: { name: "f" } })],
  parallel_tool_calls: ["yes", 1],
  // Not served: refused by name rather than ignored.
  functions: [j([{ name: "f" }])],
};

const CHAT_BAD_VALUES: Record<string, readonly JValue[]> = {
  max_completion_tokens: [0, -5, "1", 1.5, raw("1e309")],
  // A boolean on chat; top_logprobs (0 to 20) only with it.
  logprobs: [1, "yes", j({})],
  top_logprobs: [2, 21, -1, "2", 1.5],
};

const COMPLETION_BAD_VALUES: Record<string, readonly JValue[]> = {
  echo: [true],
  // The number of alternatives itself on text completions, 0 to 5.
  logprobs: [true, 6, -1, 1.5, "yes"],
};

function badMessages(marker: string): JValue[] {
  const text = `${marker} hello`;
  const user = (content: unknown) => ({ role: "user", content });
  return [
    null,
    "hi",
    5,
    true,
    j({}),
    j([]),
    j([null]),
    j([5]),
    j(["hi"]),
    j([[]]),
    j([{}]),
    j([{ role: "wizard", content: text }]),
    j([{ role: "USER", content: text }]),
    j([{ role: "", content: text }]),
    j([{ role: 5, content: text }]),
    j([{ content: text }]),
    j([{ role: "user" }]),
    j([{ role: "system", content: null }]),
    j([user(text), { role: "tool", content: null }]),
    j([user(text), { role: "tool", content: text }]),
    j([user(text), { role: "tool", tool_call_id: "c1", content: text }]),
    j([
      user(text),
      {
        role: "assistant",
        content: null,
        tool_calls: [{ id: "c1", type: "function", function: { name: "f", arguments: "{}" } }],
      },
    ]),
    j([
      user(text),
      {
        role: "assistant",
        content: null,
        tool_calls: [{ id: "c1", type: "function", function: { name: "f", arguments: {} } }],
      },
    ]),
    j([user(text), { role: "assistant", content: null, tool_calls: {} }]),
    j([user(5)]),
    j([user({ text })]),
    j([user(true)]),
    j([user([null])]),
    j([user([5])]),
    j([user([{}])]),
    j([user([{ type: "image_url", image_url: { url: "http://127.0.0.1/x.png" } }])]),
    j([user([{ type: "text" }])]),
    j([user([{ type: "text", text: 5 }])]),
    j([user([{ type: "TEXT", text }])]),
    j([
      user([
        { type: "text", text },
        { type: "input_audio", input_audio: {} },
      ]),
    ]),
    new JObject([["0", j(user(text))]]),
    j(Array.from({ length: 4097 }, () => user("a"))),
    deepArray(10_000),
  ];
}

const BAD_PROMPTS: readonly JValue[] = [
  null,
  5,
  true,
  j({}),
  j([]),
  j([1, 2, 3]),
  j(["a", "b"]),
  j([["a"]]),
  j([null]),
];

const UNKNOWN_KEYS = [
  "foo",
  "__proto__",
  "constructor",
  "prototype",
  "metadata",
  "",
  "model ",
  "MODEL",
  "\u0000",
  "x".repeat(1000),
];

/** Content types a client might send; the drill pairs them with bodies that must be refused anyway. */
const CONTENT_TYPES: readonly (string | undefined)[] = [
  "application/json",
  "application/json; charset=utf-8",
  "application/json; charset=latin1",
  "text/plain",
  "text/plain;charset=UTF-8",
  "application/x-www-form-urlencoded",
  "multipart/form-data; boundary=xyz",
  "application/xml",
  "application/octet-stream",
  "*/*",
  "",
  undefined,
];

/** Bytes that are not UTF-8: a stray byte, an overlong NUL, a surrogate, > U+10FFFF, a truncated sequence. */
const INVALID_UTF8: readonly number[][] = [
  [0xff],
  [0xfe],
  [0x80],
  [0xc0, 0x80],
  [0xed, 0xa0, 0x80],
  [0xf4, 0x90, 0x80, 0x80],
  [0xe2, 0x82],
  [0xf8, 0x88, 0x80, 0x80, 0x80],
];

function randomJson(rng: Rng, depth = 0): JValue {
  const k = rng.int(depth > 2 ? 6 : 9);
  switch (k) {
    case 0:
      return null;
    case 1:
      return rng.chance(0.5);
    case 2:
      return rng.pick([0, -1, 1.5, 2 ** 53 + 2, -(2 ** 31), 1e300]);
    case 3:
      return rng.pick([raw("1e309"), raw("-0"), raw("1E+2"), raw("0.0000001")]);
    case 4:
      return rng.pick(["", "x", "\u0000\u001f", "\ud83d\ude00", "\u2028", "a".repeat(rng.range(1, 5000))]);
    case 5:
      return raw('"\\ud800 lone surrogate"');
    case 6:
      return Array.from({ length: rng.range(0, 4) }, () => randomJson(rng, depth + 1));
    case 7:
      return new JObject(
        Array.from({ length: rng.range(0, 4) }, () => [rng.pick(UNKNOWN_KEYS), randomJson(rng, depth + 1)]),
      );
    default:
      return rng.chance(0.5) ? deepArray(rng.pick([100, 10_000])) : deepObject(rng.pick([100, 10_000]));
  }
}

type Endpoint = "chat" | "completions";

function baseBody(rng: Rng, endpoint: Endpoint, marker: string): { body: JObject; stream: boolean } {
  const body = new JObject([["model", "tiny"]]);
  if (endpoint === "chat") {
    const messages: unknown[] = [];
    if (rng.chance(0.3)) messages.push({ role: "system", content: "Answer tersely." });
    messages.push(
      rng.chance(0.2)
        ? { role: "user", content: [{ type: "text", text: `${marker} hello` }] }
        : { role: "user", content: `${marker} hello` },
    );
    body.set("messages", j(messages));
  } else {
    body.set("prompt", `${marker} once upon a time`);
  }
  body.set("max_tokens", rng.range(1, 8));
  const stream = rng.chance(0.4);
  if (stream) {
    body.set("stream", true);
    if (rng.chance(0.5)) body.set("stream_options", j({ include_usage: true }));
  } else if (rng.chance(0.2)) {
    body.set("stream", false);
  }
  if (rng.chance(0.3)) body.set("temperature", rng.pick([0, 0.7, 2]));
  if (rng.chance(0.2)) body.set("top_p", 0.9);
  if (rng.chance(0.2)) body.set("seed", rng.range(-1000, 1000));
  if (rng.chance(0.2)) body.set("stop", j(["\n"]));
  if (rng.chance(0.1)) body.set("n", 1);
  if (rng.chance(0.1)) body.set("user", "drill");
  return { body, stream };
}

/** A change that makes the body one the coordinator must refuse (400). Returns its label. */
function breakBody(rng: Rng, endpoint: Endpoint, body: JObject, marker: string): string {
  const fields = { ...BAD_VALUES, ...(endpoint === "chat" ? CHAT_BAD_VALUES : COMPLETION_BAD_VALUES) };
  const kind = rng.int(10);
  if (kind <= 3) {
    const field = rng.pick(Object.keys(fields));
    const values = fields[field] ?? [];
    const value = rng.pick(values);
    if (field === "best_of" && value === 2) body.delete("n");
    body.set(field, value);
    return `${field}=bad`;
  }
  if (kind === 4) {
    if (endpoint === "chat") body.set("messages", rng.pick(badMessages(marker)));
    else body.set("prompt", rng.pick(BAD_PROMPTS));
    return endpoint === "chat" ? "messages=bad" : "prompt=bad";
  }
  if (kind === 5) {
    const field = rng.pick(["model", endpoint === "chat" ? "messages" : "prompt"]);
    body.delete(field);
    return `${field}=missing`;
  }
  if (kind === 6) {
    // Duplicate keys: JSON.parse keeps the last, which is the bad one.
    const field = rng.pick(["model", "max_tokens", "temperature", "n", "stream"]);
    body.entries.push([field, rng.pick(fields[field] ?? [null])]);
    return `${field}=duplicate-bad-last`;
  }
  if (kind === 7) {
    // Over the tiny model's context: a budget it cannot hold, or a prompt that is too long.
    if (rng.chance(0.5)) {
      body.set("max_tokens", 1_000_000);
      return "max_tokens=over-context";
    }
    const long = `${marker} ${"lorem ipsum ".repeat(rng.range(40_000, 300_000))}`;
    if (endpoint === "chat") body.set("messages", j([{ role: "user", content: long }]));
    else body.set("prompt", long);
    return "prompt=over-context";
  }
  if (kind === 8) {
    if (body.has("stream") && rng.chance(0.5)) {
      body.set("stream", true);
      body.set(
        "stream_options",
        rng.pick([5, "x", j([]), j({ include_usage: "yes" }), j({ include_usage: 1 })]),
      );
      return "stream_options=bad";
    }
    body.set("stream", false);
    body.set("stream_options", j({ include_usage: true }));
    return "stream_options=without-stream";
  }
  body.set(
    rng.pick(["model", endpoint === "chat" ? "messages" : "prompt"]),
    rng.chance(0.5) ? deepArray(10_000) : deepObject(10_000),
  );
  return "deep-nesting";
}

/** A change that leaves a valid body valid (and an invalid one invalid). Returns its label. */
function neutralAstChange(rng: Rng, body: JObject): string {
  if (rng.chance(0.6)) {
    const key = rng.pick(UNKNOWN_KEYS);
    if (key === "model " || key === "MODEL") body.entries.push([key, 5]);
    else body.entries.push([key, randomJson(rng)]);
    return "extra-field";
  }
  // Duplicate keys: a bad value first, the body's own (valid) value last.
  const present = body.entries.filter(([k]) => k !== "").map(([k]) => k);
  const key = rng.pick(present);
  body.entries.unshift([key, rng.pick([5, "x", null, j([])])]);
  return "duplicate-good-last";
}

function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  return Buffer.from(haystack.buffer, haystack.byteOffset, haystack.byteLength).indexOf(needle);
}

/** Replaces the end of the first occurrence of `marker` with bytes that are not UTF-8. */
function injectInvalidUtf8(rng: Rng, bytes: Uint8Array, marker: string): Uint8Array | undefined {
  const m = enc.encode(marker);
  const at = indexOf(bytes, m);
  if (at === -1) return undefined;
  const bad = Uint8Array.from(rng.pick(INVALID_UTF8));
  const cut = at + m.length;
  return concat(bytes.subarray(0, cut), bad, bytes.subarray(cut));
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  return Buffer.concat(parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength)));
}

/** A whole body that is not a JSON object the coordinator can take. */
function garbageBody(rng: Rng, marker: string): { label: string; bytes: Uint8Array } {
  const valid = serialize(baseBody(rng, rng.pick(["chat", "completions"] as const), marker).body);
  const options: (() => { label: string; text?: string; bytes?: Uint8Array })[] = [
    () => ({ label: "empty", text: "" }),
    () => ({ label: "null", text: "null" }),
    () => ({ label: "top-level-array", text: `[${valid}]` }),
    () => ({ label: "top-level-empty-array", text: "[]" }),
    () => ({ label: "top-level-number", text: rng.pick(["0", "42", "-1", "1e309", "3.14"]) }),
    () => ({ label: "top-level-string", text: JSON.stringify(valid) }),
    () => ({ label: "top-level-bool", text: rng.pick(["true", "false"]) }),
    () => ({ label: "truncated", text: valid.slice(0, rng.int(valid.length - 1)) }),
    () => ({ label: "two-objects", text: `${valid}${valid}` }),
    () => ({ label: "trailing-comma", text: `${valid.slice(0, -1)},}` }),
    () => ({ label: "single-quotes", text: valid.replaceAll('"', "'") }),
    () => ({ label: "comment", text: `/* ${marker} */${valid}` }),
    () => ({ label: "nan-literal", text: valid.replace('"max_tokens":', '"max_tokens":NaN,"x":') }),
    () => ({ label: "infinity-literal", text: valid.replace('"max_tokens":', '"max_tokens":Infinity,"x":') }),
    () => ({ label: "random-bytes", bytes: rng.bytes(rng.range(1, 4096)) }),
    () => ({
      label: "random-ascii",
      text: String.fromCharCode(...rng.bytes(rng.range(1, 512)).map((b) => 32 + (b % 95))),
    }),
    () => ({ label: "nul-bytes", bytes: new Uint8Array(rng.range(1, 64)) }),
    () => ({ label: "deep-array-top", text: deepArray(10_000).text }),
    () => ({ label: "deep-object-top", text: deepObject(10_000).text }),
    () => ({ label: "utf16le", bytes: Buffer.from(`\ufeff${valid}`, "utf16le") }),
    () => ({ label: "form-encoded", text: `model=tiny&prompt=${encodeURIComponent(marker)}` }),
  ];
  const chosen = rng.pick(options)();
  return { label: chosen.label, bytes: chosen.bytes ?? enc.encode(chosen.text ?? "") };
}

/**
 * `count` malformed requests for the OpenAI routes, generated as they are taken (a heavy run's bodies
 * are not all held at once) (and a few others). Every fuzzed prompt carries
 * `marker`, which must never show up in the coordinator's log.
 */
export function* generateHttpCases(rng: Rng, count: number, marker: string): Generator<HttpCase> {
  for (let id = 0; id < count; id++) {
    const r = rng.fork();
    const roll = r.next();
    const endpoint: Endpoint = r.chance(0.75) ? "chat" : "completions";
    const path = endpoint === "chat" ? "/v1/chat/completions" : "/v1/completions";
    const base = {
      id,
      method: "POST",
      path,
      auth: "account" as AuthMode,
      contentType: "application/json" as string | undefined,
      stream: false,
      expect: {} as HttpExpectation,
    };
    if (roll < 0.68) {
      // The grammar-based mutator: a valid body, one to three changes that each break it, and
      // changes that do not (unknown fields, duplicate keys, a BOM, another content type).
      const { body, stream } = baseBody(r, endpoint, marker);
      const labels: string[] = [endpoint];
      const breaking = r.range(1, 3);
      let utf8 = false;
      for (let i = 0; i < breaking; i++) {
        if (r.chance(0.12)) utf8 = true;
        else labels.push(breakBody(r, endpoint, body, marker));
      }
      if (utf8 && labels.length === 1 && r.chance(0.5)) labels.push(breakBody(r, endpoint, body, marker));
      for (let i = r.range(0, 2); i > 0; i--) labels.push(neutralAstChange(r, body));
      let bytes: Uint8Array = enc.encode(serialize(body));
      if (utf8) {
        const injected = injectInvalidUtf8(r, bytes, marker);
        if (injected) {
          bytes = injected;
          labels.push("invalid-utf8");
        } else if (labels.length === 1) {
          labels.push(breakBody(r, endpoint, body, marker));
          bytes = enc.encode(serialize(body));
        }
      }
      if (r.chance(0.08)) {
        bytes = concat(Uint8Array.from([0xef, 0xbb, 0xbf]), bytes);
        labels.push("bom");
      }
      if (r.chance(0.05)) {
        bytes = concat(enc.encode("\r\n\t "), bytes, enc.encode(" \n"));
        labels.push("whitespace");
      }
      let contentType = base.contentType;
      if (r.chance(0.15)) {
        contentType = r.pick(CONTENT_TYPES);
        labels.push(`content-type=${contentType ?? "none"}`);
      }
      yield { ...base, label: labels.join("|"), contentType, body: bytes, stream };
    } else if (roll < 0.8) {
      const g = garbageBody(r, marker);
      const contentType = r.chance(0.2) ? r.pick(CONTENT_TYPES) : base.contentType;
      yield { ...base, label: `${endpoint}|garbage=${g.label}`, contentType, body: g.bytes };
    } else if (roll < 0.86) {
      // Unknown model in an otherwise valid body (perhaps with unknown fields): 404 model_not_found.
      const { body, stream } = baseBody(r, endpoint, marker);
      body.set(
        "model",
        r.pick([
          "gpt-4o",
          "tiny-",
          "TINY",
          "tiny\u0000",
          `no-such-model-${r.u32()}`,
          "../tiny",
          "tiny:latest",
        ]),
      );
      const labels: string[] = [endpoint, "unknown-model"];
      if (r.chance(0.4)) labels.push(neutralAstChange(r, body));
      yield {
        ...base,
        label: labels.join("|"),
        body: enc.encode(serialize(body)),
        stream,
        expect: { status: 404, code: "model_not_found" },
      };
    } else if (roll < 0.92) {
      // Authentication before anything else: 401 whatever the body.
      const auth = r.pick(["none", "bare-bearer", "basic", "unknown-key", "long-key"] as const);
      const body = r.chance(0.5)
        ? enc.encode(serialize(baseBody(r, endpoint, marker).body))
        : garbageBody(r, marker).bytes;
      yield {
        ...base,
        label: `${endpoint}|auth=${auth}`,
        auth,
        body,
        expect: { status: 401, code: "invalid_api_key" },
      };
    } else {
      yield otherRoute(r, id, marker);
    }
  }
}

/**
 * Routes beside the two completions endpoints: embeddings, unknown ones, wrong methods, the money
 * endpoints.
 */
function otherRoute(rng: Rng, id: number, marker: string): HttpCase {
  const valid = enc.encode(serialize(baseBody(rng, "chat", marker).body));
  const c = (partial: Partial<HttpCase> & Pick<HttpCase, "label" | "expect">): HttpCase => ({
    id,
    method: "POST",
    path: "/v1/chat/completions",
    auth: "account",
    contentType: "application/json",
    body: valid,
    stream: false,
    ...partial,
  });
  const notFound = { status: 404, code: "not_found" };
  const options: (() => HttpCase)[] = [
    () => {
      // An embeddings body the reader refuses (a chat body among them): 400 before anything is
      // reserved, whatever the model.
      const [what, body] = rng.pick([
        ["chat-body", JSON.parse(serialize(baseBody(rng, "chat", marker).body))],
        ["empty-input", { model: "tiny", input: "" }],
        ["no-inputs", { model: "tiny", input: [] }],
        ["token-ids", { model: "tiny", input: [1, 2, 3] }],
        ["mixed-input", { model: "tiny", input: [marker, 7] }],
        ["encoding", { model: "tiny", input: marker, encoding_format: "int8" }],
        ["dimensions", { model: "tiny", input: marker, dimensions: rng.pick([0, -3, 1.5, "64"]) }],
      ] as const);
      return c({
        label: `embeddings|${what}`,
        path: "/v1/embeddings",
        body: enc.encode(JSON.stringify(body)),
        expect: { status: 400, code: "invalid_request_error" },
      });
    },
    () =>
      c({
        label: "unknown-route",
        path: `/v1/${rng.pick(["chat", "engines/tiny/completions", "responses", "images/generations", "audio/speech", "chat/completions/x", "..%2f..%2fetc%2fpasswd", "chat/completions%00"])}`,
        expect: notFound,
      }),
    () =>
      c({
        label: "method=GET",
        method: "GET",
        body: undefined,
        expect: { status: 405, code: "method_not_allowed" },
      }),
    () => c({ label: "method=PUT", method: "PUT", expect: { status: 405, code: "method_not_allowed" } }),
    () =>
      c({
        label: "method=DELETE",
        method: "DELETE",
        body: undefined,
        path: "/v1/completions",
        expect: { status: 405, code: "method_not_allowed" },
      }),
    () => c({ label: "method=PATCH", method: "PATCH", expect: { status: 405, code: "method_not_allowed" } }),
    () =>
      c({ label: "models=POST", path: "/v1/models", expect: { status: 405, code: "method_not_allowed" } }),
    () =>
      c({
        label: "models=no-auth",
        method: "GET",
        path: "/v1/models",
        auth: "unknown-key",
        body: undefined,
        expect: { status: 401, code: "invalid_api_key" },
      }),
    () =>
      c({
        label: "account=bad-auth",
        method: "GET",
        path: "/v1/account",
        auth: rng.pick(["none", "basic", "unknown-key"] as const),
        body: undefined,
        expect: { status: 401, code: "invalid_api_key" },
      }),
    () => {
      const g = rng.chance(0.5)
        ? garbageBody(rng, marker)
        : {
            label: "fields",
            bytes: enc.encode(
              serialize(
                new JObject([
                  ["code", rng.pick([5, null, j([]), j({}), "", "x".repeat(600)])],
                  ["x", randomJson(rng)],
                ]),
              ),
            ),
          };
      return c({
        label: `invites/redeem|${g.label}`,
        path: "/v1/invites/redeem",
        auth: "money-account",
        body: g.bytes,
        expect: { allow429: true },
      });
    },
    () => {
      const g = rng.chance(0.5)
        ? garbageBody(rng, marker)
        : {
            label: "fields",
            bytes: enc.encode(
              serialize(new JObject([["code", rng.pick([5, null, j([]), "", "nope-nope"])]])),
            ),
          };
      return c({
        label: `referrals/apply|${g.label}`,
        path: "/v1/referrals/apply",
        auth: "money-account",
        body: g.bytes,
        expect: { allow429: true },
      });
    },
  ];
  return rng.pick(options)();
}

// ---------------------------------------------------------------------------------------------
// Provider streams (ProviderService.Connect over h2c)

export const CONNECT_PATH = "/darkbloom.provider.v1.ProviderService/Connect";

/** A Connect/gRPC envelope: flags, big-endian uint32 length (by default the payload's), payload. */
export function envelope(payload: Uint8Array, flags = 0, declaredLength = payload.length): Uint8Array {
  const head = Buffer.alloc(5);
  head.writeUInt8(flags, 0);
  head.writeUInt32BE(declaredLength >>> 0, 1);
  return concat(head, payload);
}

type ConnectRequestInit = MessageInitShape<typeof ConnectRequestSchema>;

export function encodeRequest(init: ConnectRequestInit): Uint8Array {
  return toBinary(ConnectRequestSchema, create(ConnectRequestSchema, init));
}

/** How a malformed stream must end. */
export type StreamExpectation =
  /** An error status; `codes` lists the acceptable ones. */
  | { kind: "error"; codes: readonly string[]; withinMs?: number }
  /** Accepted (RegisterAck) but never routable; the drill then sends nonsense and closes it. */
  | { kind: "registered" }
  /** The client resets the stream itself: nothing to read, the coordinator must just survive. */
  | { kind: "reset" };

export interface StreamCase {
  label: string;
  /** application/connect+proto, application/grpc or application/grpc+proto. */
  contentType: string;
  /** Written in order. */
  frames: Uint8Array[];
  /** After the frames: end the request stream, reset it (RST_STREAM CANCEL) or leave it open. */
  finish: "end" | "rst" | "open";
  expect: StreamExpectation;
  /** For "registered" cases: what to send after the RegisterAck. */
  after?: Uint8Array[];
  /** The frames open with a Register the coordinator accepts (a RegisterAck is expected first). */
  registers?: boolean;
}

const PARSE_OR_ARGUMENT = ["invalid_argument", "internal"] as const;
const ARGUMENT = ["invalid_argument"] as const;

function x25519Like(rng: Rng): Uint8Array {
  return rng.bytes(32);
}

function validishRegister(rng: Rng, models: string[]): ConnectRequestInit {
  return {
    message: {
      case: "register",
      value: {
        protocolVersion: PROTOCOL_VERSION,
        daemonVersion: rng.pick(["0.1.0", "", "99999.0.0", "not-semver", "\u0000"]),
        machineId: `drill-${rng.u32().toString(16)}`,
        engineBackend: rng.pick(["llama.cpp", "", "x".repeat(200)]),
        models: models.map((id) => ({
          id,
          sizeBytes: rng.pick([0n, 2n ** 64n - 1n]),
          contextLength: rng.pick([0, 1, 2 ** 32 - 1]),
          quantization: "q?",
          weightSha256: rng.pick(["", "zz", "0".repeat(64)]),
          architecture: "\u202e",
        })),
        encryptionPublicKey: x25519Like(rng),
        capacity: { maxBatch: rng.pick([1, 4096]), maxContext: rng.pick([0, 2 ** 32 - 1]) },
        responseSignatureVersion: RESPONSE_SIGNATURE_VERSION,
        hardware: {
          machineModel: "x".repeat(rng.range(0, 2000)),
          chip: "\u0000",
          memoryBytes: 2n ** 64n - 1n,
          cpuCores: rng.pick([0, 2 ** 32 - 1]),
          accelerator: rng.pick([AcceleratorKind.CUDA, 99 as AcceleratorKind]),
          gpus: Array.from({ length: rng.range(0, 50) }, () => ({ name: "g".repeat(100), memoryBytes: 1n })),
        },
        knobs: { kvBits: 2 ** 32 - 1, threads: 0, maxBatch: 2 ** 32 - 1 },
        ...(rng.chance(0.5)
          ? {
              attestation: {
                blob: rng.bytes(rng.range(0, 2048)),
                signature: rng.bytes(rng.range(0, 80)),
                publicKey: rng.bytes(rng.pick([0, 33, 65])),
                signer: rng.pick([SignerKind.SOFTWARE, SignerKind.SECURE_ENCLAVE, 7 as SignerKind]),
              },
            }
          : {}),
      },
    },
  };
}

/** Messages for an accepted nonsense session: chunks for requests it never got, absurd heartbeats. */
function nonsenseAfterRegister(rng: Rng): Uint8Array[] {
  const out: Uint8Array[] = [];
  const n = rng.range(2, 6);
  for (let i = 0; i < n; i++) {
    const k = rng.int(7);
    let init: ConnectRequestInit;
    if (k === 0) {
      init = {
        message: {
          case: "inferenceChunk",
          value: {
            requestId: rng.pick(["", "req_unknown", "x".repeat(500)]),
            sequence: rng.pick([0n, 2n ** 64n - 1n]),
            payload: rng.chance(0.5)
              ? {
                  case: "plaintext",
                  value: { text: "drill", tokenCount: 2 ** 32 - 1, choiceIndex: 2 ** 32 - 1 },
                }
              : { case: "sealed", value: { nonce: rng.bytes(24), ciphertext: rng.bytes(64) } },
          },
        },
      };
    } else if (k === 1) {
      init = {
        message: {
          case: "heartbeat",
          value: {
            state: rng.pick([ProviderState.SERVING, 42 as ProviderState]),
            loadedModels: ["tiny", "x".repeat(300)],
            queueDepth: 2 ** 32 - 1,
            busySlots: 2 ** 32 - 1,
            kvCacheUsage: rng.pick([Number.NaN, Number.POSITIVE_INFINITY, -1]),
            prefillTokensPerSecond: rng.pick([Number.NaN, Number.POSITIVE_INFINITY, -1, 1e308]),
            decodeTokensPerSecond: rng.pick([Number.NaN, Number.POSITIVE_INFINITY, -1, 1e308]),
            memoryPressure: rng.pick([MemoryPressure.CRITICAL, 9 as MemoryPressure]),
            thermalState: rng.pick([ThermalState.CRITICAL, 9 as ThermalState]),
            requestsCompleted: 2n ** 64n - 1n,
          },
        },
      };
    } else if (k === 2) {
      init = {
        message: {
          case: "inferenceComplete",
          value: { requestId: "req_unknown", usage: { promptTokens: 2 ** 32 - 1 } },
        },
      };
    } else if (k === 3) {
      init = {
        message: {
          case: "inferenceError",
          value: { requestId: "req_unknown", httpStatus: 999, code: "x", retryable: true },
        },
      };
    } else if (k === 4) {
      init = {
        message: {
          case: "attestationResponse",
          value: { nonce: rng.bytes(32), status: rng.bytes(100), signature: rng.bytes(72), timestampMs: -1n },
        },
      };
    } else if (k === 5) {
      init = {
        message: {
          case: "loadModelStatus",
          value: { operationId: "op_unknown", modelId: "tiny", state: 3, reason: "drill" },
        },
      };
    } else {
      init = validishRegister(rng, ["tiny"]);
    }
    out.push(envelope(encodeRequest(init)));
  }
  return out;
}

/** Hand-written protobuf that is not a ConnectRequest: wrong wire types, truncated varints, short fields. */
const INVALID_PROTOBUF: readonly number[][] = [
  [0x08, 0x01], // field 1 (a message) as a varint
  [0x15, 0x01, 0x02, 0x03, 0x04], // field 2 (a message) as fixed32
  [0x08, 0xff, 0xff], // truncated varint
  [0x0a, 0x7f, 0x00], // length 127, one byte present
  [0x0a, 0x03, 0xff, 0xff, 0xff], // register holding garbage
  [0x0a, 0x02, 0x08, 0xff], // register.protocol_version truncated
  [0x0b], // start group
  [0x0c], // end group without a start
  [0x0f, 0x00], // wire type 7
  [0x00, 0x00], // field number 0
  [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f], // length 2^32-1
  [0x22, 0x05, 0x12, 0x03, 0xff, 0xfe, 0xfd], // inference_chunk.request_id: invalid UTF-8
];

/**
 * `count` malformed provider streams. "registered" cases are capped (each is a session the drill
 * must see evicted afterwards).
 */
export function generateStreamCases(rng: Rng, count: number): StreamCase[] {
  const out: StreamCase[] = [];
  let registered = 0;
  for (let i = 0; i < count; i++) {
    const r = rng.fork();
    const contentType = r.chance(0.75)
      ? "application/connect+proto"
      : r.pick(["application/grpc", "application/grpc+proto"]);
    const finish: StreamCase["finish"] = "end";
    const kind = r.int(12);
    const reg = () => envelope(encodeRequest(validishRegister(r, ["tiny"])));
    if (kind === 0) {
      out.push({
        label: "random-bytes",
        contentType,
        frames: [r.bytes(r.range(1, 64))],
        finish,
        expect: { kind: "error", codes: ["invalid_argument", "internal", "resource_exhausted"] },
      });
    } else if (kind === 1) {
      const payload = r.bytes(r.range(0, 32));
      out.push({
        label: "length-beyond-data",
        contentType,
        frames: [envelope(payload, 0, payload.length + r.range(1, 1000))],
        finish,
        expect: { kind: "error", codes: ARGUMENT },
      });
    } else if (kind === 2) {
      const declared = r.pick([2 ** 31, 2 ** 32 - 1, 2 ** 31 - 1, 64 * 1024 * 1024]);
      out.push({
        label: `declared-length=${declared}`,
        contentType,
        frames: [envelope(r.bytes(r.range(0, 16)), 0, declared)],
        finish: "open",
        expect: { kind: "error", codes: ["resource_exhausted"], withinMs: 3_000 },
      });
    } else if (kind === 3) {
      out.push({
        label: "random-protobuf",
        contentType,
        frames: [envelope(r.bytes(r.range(1, 256)))],
        finish,
        expect: { kind: "error", codes: [...PARSE_OR_ARGUMENT, "failed_precondition"] },
      });
    } else if (kind === 4) {
      out.push({
        label: "invalid-protobuf",
        contentType,
        frames: [envelope(Uint8Array.from(r.pick(INVALID_PROTOBUF)))],
        finish,
        expect: { kind: "error", codes: PARSE_OR_ARGUMENT },
      });
    } else if (kind === 5) {
      // The compressed bit without a negotiated encoding; other bits (ignored by connect-es) on a
      // payload that does not decode.
      const flags = r.pick([0x01, 0x03, 0xff, 0x02, 0x80, 0x7e]);
      const compressed = (flags & 0x01) !== 0;
      out.push({
        label: `envelope-flags=${flags}`,
        contentType,
        frames: [envelope(compressed ? reg().subarray(5) : Uint8Array.from(r.pick(INVALID_PROTOBUF)), flags)],
        finish,
        expect: { kind: "error", codes: ["invalid_argument", "internal", "unimplemented"] },
      });
    } else if (kind === 6) {
      const first = r.pick([
        "empty",
        "heartbeat",
        "inferenceChunk",
        "inferenceComplete",
        "inferenceAccepted",
        "attestationResponse",
      ] as const);
      const init: ConnectRequestInit =
        first === "empty"
          ? {}
          : first === "heartbeat"
            ? { message: { case: "heartbeat", value: { state: ProviderState.IDLE, loadedModels: ["tiny"] } } }
            : first === "inferenceChunk"
              ? {
                  message: {
                    case: "inferenceChunk",
                    value: { requestId: "req_nobody", payload: { case: "plaintext", value: { text: "x" } } },
                  },
                }
              : first === "inferenceComplete"
                ? { message: { case: "inferenceComplete", value: { requestId: "req_nobody" } } }
                : first === "inferenceAccepted"
                  ? { message: { case: "inferenceAccepted", value: { requestId: "req_nobody" } } }
                  : { message: { case: "attestationResponse", value: { nonce: r.bytes(32) } } };
      out.push({
        label: `first=${first}`,
        contentType,
        frames: [envelope(encodeRequest(init))],
        finish,
        expect: { kind: "error", codes: ARGUMENT },
      });
    } else if (kind === 7) {
      const { label, init, codes } = badRegister(r);
      out.push({
        label: `register:${label}`,
        contentType,
        frames: [envelope(encodeRequest(init))],
        finish,
        expect: { kind: "error", codes },
      });
    } else if (kind === 8) {
      out.push({
        label: "end-immediately",
        contentType,
        frames: [],
        finish,
        expect: { kind: "error", codes: ARGUMENT },
      });
    } else if (kind === 9) {
      const whole = reg();
      out.push({
        label: "rst-mid-message",
        contentType,
        frames: [whole.subarray(0, r.range(1, whole.length - 1))],
        finish: "rst",
        expect: { kind: "reset" },
      });
    } else if (kind === 10 && registered < 12) {
      registered++;
      out.push({
        label: "register-nonsense-accepted",
        contentType,
        frames: [reg()],
        finish: "open",
        expect: { kind: "registered" },
        after: nonsenseAfterRegister(r),
      });
    } else {
      // A valid Register split across many tiny writes, then garbage: the garbage must end it.
      const whole = reg();
      const frames: Uint8Array[] = [];
      for (let at = 0; at < whole.length; ) {
        const n = r.range(1, 7);
        frames.push(whole.subarray(at, at + n));
        at += n;
      }
      frames.push(envelope(Uint8Array.from(r.pick(INVALID_PROTOBUF))));
      out.push({
        label: "register-then-garbage",
        contentType,
        frames,
        finish,
        expect: { kind: "error", codes: PARSE_OR_ARGUMENT },
        registers: true,
      });
    }
  }
  return out;
}

function badRegister(rng: Rng): { label: string; init: ConnectRequestInit; codes: readonly string[] } {
  const base = validishRegister(rng, ["tiny"]);
  const value = base.message?.case === "register" ? base.message.value : undefined;
  if (!value) throw new Error("unreachable");
  const k = rng.int(11);
  const codes: readonly string[] = ARGUMENT;
  switch (k) {
    case 0:
      value.protocolVersion = rng.pick([0, 2, 2 ** 32 - 1]);
      return { label: "protocol_version", init: base, codes: ["failed_precondition"] };
    case 1:
      value.models = [];
      return { label: "no-models", init: base, codes };
    case 2:
      value.models = Array.from({ length: 300 }, (_, i) => ({ id: `m${i}` }));
      return { label: "300-models", init: base, codes };
    case 3:
      value.models = [{ id: rng.pick(["", "bad id", "\u{1f600}", "x".repeat(200), "tiny\n"]) }];
      return { label: "model-id", init: base, codes };
    case 4:
      value.models = [{ id: "tiny" }, { id: "tiny" }];
      return { label: "duplicate-model", init: base, codes };
    case 5:
      value.capacity = rng.chance(0.5) ? { maxBatch: rng.pick([0, 4097, 2 ** 32 - 1]) } : undefined;
      return { label: "max_batch", init: base, codes };
    case 6:
      value.encryptionPublicKey = rng.bytes(rng.pick([1, 31, 33, 64]));
      return { label: "encryption-key-length", init: base, codes };
    case 7:
      value.encryptionPublicKey = new Uint8Array();
      return { label: "no-encryption-key", init: base, codes };
    case 8:
      value.machineId = "m".repeat(rng.range(257, 5000));
      return { label: "machine_id-length", init: base, codes };
    case 9:
      value.accountToken = rng.pick(["garbage", "dbt_".padEnd(60, "x"), "x".repeat(5000)]);
      return { label: "account_token", init: base, codes: ["unauthenticated"] };
    default:
      return {
        label: "empty-register",
        init: { message: { case: "register", value: {} } },
        codes: ["failed_precondition"],
      };
  }
}
