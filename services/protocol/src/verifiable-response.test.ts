import { generateKeyPairSync, type KeyObject, sign, verify } from "node:crypto";
import { describe, expect, it } from "vitest";
import { chatLogprobs, completionLogprobs, type SignedLogprob } from "./logprobs.js";
import { rawP256PublicKey } from "./p256.js";
import {
  domainSignatureMessage,
  hex,
  RESPONSE_SIGNATURE_VERSION,
  type ResponseProof,
  responseRecord,
  responseSha256,
  responseSignatureMessage,
  type SignedResponse,
  sha256,
  textChoices,
  type VerifyOptions,
  type VerifyResult,
  verifyResponseSignature,
  verifyResponse as verifyWithNode,
} from "./verifiable-response.js";
import { derToP1363, verifyResponseWeb } from "./web-verify.js";

/**
 * Every case below is checked with node:crypto (`darkbloom verify`'s) and remembered; the last test
 * runs them all again with WebCrypto (the console's), which must give the same result, reason for
 * reason.
 */
const cases: Array<{ saved: unknown; options: VerifyOptions | undefined; result: VerifyResult }> = [];
function verifyResponse(saved: unknown, options?: VerifyOptions): VerifyResult {
  const result = verifyWithNode(saved, options);
  cases.push({ saved: structuredClone(saved), options, result });
  return result;
}

const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
const forgerKey = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
const base64Key = (k: KeyObject) => Buffer.from(rawP256PublicKey(k)).toString("base64");

const REQUEST = JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }], n: 2 });
const RESPONSE: SignedResponse = {
  providerId: "prov_test",
  model: "m",
  choices: textChoices(["Hello, wörld! 👋", ""], ["stop", "length"]),
  usage: { promptTokens: 9, completionTokens: 7 },
};

/** A response whose first choice is empty: dropping it changed no choice text before version 2. */
const EMPTY_FIRST: SignedResponse = { ...RESPONSE, choices: textChoices(["", "Hello"], ["stop", "stop"]) };

/**
 * The proof a provider (or, with its own key, a forger) makes for a response; `version` 2 is how
 * daemons signed before logprobs (the same record under its own domain).
 */
function proofFor(
  response: SignedResponse,
  requestBody = REQUEST,
  key = privateKey,
  version = RESPONSE_SIGNATURE_VERSION,
): ResponseProof {
  const requestHash = sha256(new TextEncoder().encode(requestBody));
  const responseHash = responseSha256(response);
  const message =
    version === RESPONSE_SIGNATURE_VERSION
      ? responseSignatureMessage(requestHash, responseHash)
      : domainSignatureMessage(
          new TextEncoder().encode(`darkbloom-response-v${version}\0`),
          requestHash,
          responseHash,
        );
  return {
    version,
    provider_id: response.providerId,
    trust_level: "self_signed",
    signing_key: base64Key(key),
    request_sha256: hex(requestHash),
    response_sha256: hex(responseHash),
    usage: {
      prompt_tokens: response.usage.promptTokens,
      completion_tokens: response.usage.completionTokens,
    },
    signature: sign("sha256", message, key).toString("base64"),
  };
}

// biome-ignore lint/suspicious/noExplicitAny: saved bodies are edited freely by the forgeries
type Body = any;

function usageOf(r: SignedResponse) {
  const { promptTokens: p, completionTokens: c } = r.usage;
  return { prompt_tokens: p, completion_tokens: c, total_tokens: p + c };
}

/** A non-streaming chat body as the coordinator writes it. */
function chatBody(r: SignedResponse, proof: ResponseProof = proofFor(r)): Body {
  return {
    id: "chatcmpl-1",
    object: "chat.completion",
    created: 1,
    model: r.model,
    choices: r.choices.map((c) => ({
      index: c.index,
      message: { role: "assistant", content: c.content, refusal: c.refusal },
      logprobs: c.logprobs ? chatLogprobs(c.logprobs) : null,
      finish_reason: c.finishReason,
    })),
    usage: usageOf(r),
    darkbloom: proof,
  };
}

/** A saved chat stream as the coordinator writes it: deltas of up to 3 characters, per choice. */
function sseTranscript(r: SignedResponse, proof = proofFor(r), includeUsage = true): string {
  const events: unknown[] = [];
  const head = { id: "chatcmpl-1", object: "chat.completion.chunk", created: 1, model: r.model };
  const usage = includeUsage ? { usage: null } : {};
  for (const c of r.choices) {
    if (c.logprobs) {
      // A delta per token, as providers send them when logprobs are asked for (the tokens of a
      // character split across them together).
      let tokens: SignedLogprob[] = [];
      for (const e of c.logprobs) {
        tokens.push(e);
        const joined = Buffer.concat(tokens.map((t) => t.token));
        if (new TextDecoder().decode(joined).endsWith("\uFFFD")) continue;
        const content = joined.toString("utf8");
        const delta = events.length === 0 ? { role: "assistant", content } : { content };
        const logprobs = chatLogprobs(tokens);
        events.push({
          ...head,
          choices: [{ index: c.index, delta, logprobs, finish_reason: null }],
          ...usage,
        });
        tokens = [];
      }
      continue;
    }
    for (const [i, piece] of (c.content?.match(/.{1,3}/gsu) ?? []).entries()) {
      const delta = i === 0 ? { role: "assistant", content: piece } : { content: piece };
      events.push({ ...head, choices: [{ index: c.index, delta, finish_reason: null }], ...usage });
    }
  }
  for (const c of r.choices) {
    const delta = c.content ? {} : { role: "assistant", content: "" };
    const logprobs = c.logprobs ? chatLogprobs([]) : null;
    events.push({
      ...head,
      choices: [{ index: c.index, delta, logprobs, finish_reason: c.finishReason }],
      ...usage,
    });
  }
  if (includeUsage) events.push({ ...head, choices: [], usage: usageOf(r) });
  events.push({ ...head, choices: [], ...usage, darkbloom: proof });
  return `${[...events.map((e) => JSON.stringify(e)), "[DONE]"].map((e) => `data: ${e}\n\n`).join(": keep-alive\n\n")}`;
}

function edit(body: Body, change: (copy: Body) => void): Body {
  const copy = structuredClone(body);
  change(copy);
  return copy;
}

describe("the response record and the signed message", () => {
  it("encode the documented example byte for byte", () => {
    const record = responseRecord({
      providerId: "prov_1",
      model: "m",
      choices: textChoices(["hi"], ["stop"]),
      usage: { promptTokens: 3, completionTokens: 1 },
    });
    expect(Buffer.from(record).toString("hex")).toBe(
      "00000006" +
        "70726f765f31" +
        "00000001" +
        "6d" +
        "00000001" + // provider id, model, n
        "00000000" +
        "01" +
        "00000002" +
        "6869" +
        "00" + // index 0, content "hi", refusal null
        "00000000" +
        "00" +
        "00000004" +
        "73746f70" + // no tool calls, no logprobs, "stop"
        "00000003" +
        "00000001", // usage
    );
    const message = responseSignatureMessage(sha256(new Uint8Array()), sha256(record));
    expect(Buffer.from(message.subarray(0, 22)).toString("latin1")).toBe("darkbloom-response-v3\u0000");
    expect(message).toHaveLength(86);
    expect(hex(message.subarray(54))).toBe(hex(sha256(record)));
  });

  it("covers every field: any change gives another hash, and the hash is of the record", () => {
    const base = hex(responseSha256(RESPONSE));
    expect(base).toBe(hex(sha256(responseRecord(RESPONSE))));
    const [first, second] = RESPONSE.choices as [SignedResponse["choices"][0], SignedResponse["choices"][0]];
    const variants: SignedResponse[] = [
      { ...RESPONSE, providerId: "prov_other" },
      { ...RESPONSE, model: "m2" },
      { ...RESPONSE, usage: { promptTokens: 9, completionTokens: 8 } },
      { ...RESPONSE, usage: { promptTokens: 10, completionTokens: 7 } },
      { ...RESPONSE, choices: [first] },
      { ...RESPONSE, choices: [first, { ...second, content: null }] }, // null is not ""
      { ...RESPONSE, choices: [first, { ...second, refusal: "" }] },
      { ...RESPONSE, choices: [first, { ...second, finishReason: "stop" }] },
      {
        ...RESPONSE,
        choices: [
          first,
          { ...second, toolCalls: [{ id: "c", type: "function", name: "f", arguments: "{}" }] },
        ],
      },
      // Length prefixes: moving bytes between adjacent fields changes the record.
      { ...RESPONSE, providerId: "prov_testm", model: "" },
    ];
    const hashes = new Set([base, ...variants.map((v) => hex(responseSha256(v)))]);
    expect(hashes.size).toBe(variants.length + 1);
  });

  it("refuses to encode choices out of order or token counts that are not u32", () => {
    const [first, second] = RESPONSE.choices as [SignedResponse["choices"][0], SignedResponse["choices"][0]];
    expect(() => responseSha256({ ...RESPONSE, choices: [second, first] })).toThrow(/index/);
    expect(() => responseSha256({ ...RESPONSE, usage: { promptTokens: 0.5, completionTokens: 1 } })).toThrow(
      /prompt_tokens/,
    );
    expect(() =>
      responseSha256({ ...RESPONSE, usage: { promptTokens: 1, completionTokens: 2 ** 32 } }),
    ).toThrow(/completion_tokens/);
  });
});

describe("verifyResponse", () => {
  it("accepts a saved JSON body, its text, its bytes, and SSE transcripts with and without a usage chunk", () => {
    const body = chatBody(RESPONSE);
    for (const saved of [
      body,
      JSON.stringify(body),
      Buffer.from(JSON.stringify(body)),
      sseTranscript(RESPONSE),
      sseTranscript(RESPONSE, proofFor(RESPONSE), false),
    ]) {
      const result = verifyResponse(saved, { requestBody: REQUEST });
      expect(result).toMatchObject({ ok: true, pinned: false, response: RESPONSE });
    }
    const completion = { ...RESPONSE, choices: textChoices(["once"], ["stop"]) };
    const completionBody = {
      object: "text_completion",
      model: "m",
      choices: [{ text: "once", index: 0, logprobs: null, finish_reason: "stop" }],
      usage: usageOf(completion),
      darkbloom: proofFor(completion, "{}"),
    };
    expect(verifyResponse(completionBody).ok).toBe(true);
  });

  it("is pinned only when the key it must be signed with is given and is the signer's", () => {
    const body = chatBody(RESPONSE);
    expect(verifyResponse(body, { signingKey: base64Key(privateKey) })).toMatchObject({
      ok: true,
      pinned: true,
    });
    expect(verifyResponse(body, { signingKey: base64Key(forgerKey) })).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/another key than the pinned one/),
    });
  });

  // Each of these said "valid" before version 2 (issue 10, item 6).
  const forgeries: Array<[string, () => unknown, RegExp]> = [
    [
      "a forged choice placed before the real one with the same index",
      () =>
        edit(chatBody(RESPONSE), (b) => b.choices.unshift({ ...b.choices[0], message: { content: "Bye" } })),
      /index 0 appears more than once/,
    ],
    [
      "an extra choice with index 0.5",
      () => edit(chatBody(RESPONSE), (b) => b.choices.push({ ...b.choices[1], index: 0.5 })),
      /index is 0.5, not an integer index/,
    ],
    [
      "an extra choice with index 0.5 in a stream",
      () =>
        sseTranscript(RESPONSE).replace(
          "data: ",
          `data: ${JSON.stringify({ model: "m", choices: [{ index: 0.5, delta: { content: "Bye" } }] })}\n\ndata: `,
        ),
      /0.5, not an integer index/,
    ],
    [
      "a duplicate index",
      () => edit(chatBody(RESPONSE), (b) => b.choices.push({ ...b.choices[1] })),
      /index 1 appears more than once/,
    ],
    [
      "a missing index (an empty first choice dropped)",
      () => edit(chatBody(EMPTY_FIRST), (b) => b.choices.shift()),
      /choice index 0 is missing/,
    ],
    [
      "a gap in the indices",
      () => edit(chatBody(RESPONSE), (b) => Object.assign(b.choices[1], { index: 2 })),
      /choice index 1 is missing/,
    ],
    [
      "an edited refusal",
      () => edit(chatBody(RESPONSE), (b) => Object.assign(b.choices[1].message, { refusal: "I won't." })),
      /response_sha256 does not match/,
    ],
    [
      "an edited usage",
      () =>
        edit(chatBody(RESPONSE), (b) => {
          b.usage.completion_tokens = 70;
          b.usage.total_tokens = 79;
        }),
      /usage .* is not the usage signed/,
    ],
    [
      "an edited usage in the proof and the body",
      () =>
        edit(chatBody(RESPONSE), (b) => {
          b.usage = { prompt_tokens: 1, completion_tokens: 7, total_tokens: 8 };
          b.darkbloom.usage.prompt_tokens = 1;
        }),
      /response_sha256 does not match/,
    ],
    [
      "an edited usage chunk in a stream",
      () =>
        sseTranscript(RESPONSE).replace(
          '"completion_tokens":7,"total_tokens":16',
          '"completion_tokens":1,"total_tokens":10',
        ),
      /is not the usage signed/,
    ],
    [
      "an edited finish_reason",
      () => edit(chatBody(RESPONSE), (b) => Object.assign(b.choices[1], { finish_reason: "stop" })),
      /response_sha256 does not match/,
    ],
    [
      "an edited model",
      () => edit(chatBody(RESPONSE), (b) => Object.assign(b, { model: "gpt-5" })),
      /response_sha256 does not match/,
    ],
    [
      "a changed provider_id",
      () => edit(chatBody(RESPONSE), (b) => Object.assign(b.darkbloom, { provider_id: "prov_famous" })),
      /response_sha256 does not match/,
    ],
    [
      "an added tool call",
      () =>
        edit(chatBody(RESPONSE), (b) =>
          Object.assign(b.choices[0].message, {
            tool_calls: [{ id: "c", type: "function", function: { name: "pay", arguments: "{}" } }],
          }),
        ),
      /response_sha256 does not match/,
    ],
    [
      "added logprobs",
      () => edit(chatBody(RESPONSE), (b) => Object.assign(b.choices[0], { logprobs: { content: [] } })),
      /response_sha256 does not match/,
    ],
    [
      "a field no signature covers",
      () => edit(chatBody(RESPONSE), (b) => Object.assign(b.choices[0].message, { audio: { data: "AAAA" } })),
      /message carries audio/,
    ],
    [
      "a message that is not the assistant's",
      () => edit(chatBody(RESPONSE), (b) => Object.assign(b.choices[0].message, { role: "system" })),
      /not an assistant message/,
    ],
    [
      "a key of the wrong size",
      () =>
        edit(chatBody(RESPONSE), (b) => (b.darkbloom.signing_key = Buffer.alloc(33, 2).toString("base64"))),
      /signing_key is not usable: a P-256 public key is 65 bytes starting 0x04, got 33 bytes/,
    ],
    [
      "a key that is not on the curve",
      () =>
        edit(chatBody(RESPONSE), (b) => {
          const key = Buffer.from(b.darkbloom.signing_key, "base64");
          key[64] = (key[64] as number) ^ 1;
          b.darkbloom.signing_key = key.toString("base64");
        }),
      /signing_key is not usable: it is not a point on P-256/,
    ],
    [
      "a key that is not base64",
      () => edit(chatBody(RESPONSE), (b) => (b.darkbloom.signing_key = "not base64!")),
      /signing_key is not usable: it is not base64/,
    ],
    [
      "a signature that is not DER",
      () => edit(chatBody(RESPONSE), (b) => (b.darkbloom.signature = Buffer.alloc(64, 7).toString("base64"))),
      /signature does not verify/,
    ],
    [
      "an unsigned response",
      () =>
        edit(chatBody(RESPONSE), (b) => Object.assign(b.darkbloom, { signature: null, signing_key: null })),
      /is not signed/,
    ],
  ];
  for (const [name, forge, reason] of forgeries) {
    it(`refuses ${name}`, () => {
      expect(verifyResponse(forge(), { signingKey: base64Key(privateKey) })).toMatchObject({
        ok: false,
        reason: expect.stringMatching(reason),
      });
    });
  }

  it("a response fabricated and signed with the forger's own key is valid but not pinned, and fails pinned", () => {
    const fabricated: SignedResponse = {
      ...RESPONSE,
      choices: textChoices(["Trust me.", ""], ["stop", "stop"]),
    };
    const body = chatBody(fabricated, proofFor(fabricated, REQUEST, forgerKey));
    expect(verifyResponse(body)).toMatchObject({ ok: true, pinned: false });
    expect(verifyResponse(body, { signingKey: base64Key(privateKey) })).toMatchObject({ ok: false });
  });

  it("fails on any changed character of the content, the request, or the signature", () => {
    const body = chatBody(RESPONSE);
    const text = RESPONSE.choices[0]?.content as string;
    for (let i = 0; i < text.length; i++) {
      const changed = `${text.slice(0, i)}${text[i] === "x" ? "y" : "x"}${text.slice(i + 1)}`;
      const result = verifyResponse(
        edit(body, (b) => Object.assign(b.choices[0].message, { content: changed })),
      );
      expect(result).toMatchObject({ ok: false, reason: expect.stringMatching(/response_sha256/) });
    }
    expect(verifyResponse(sseTranscript(RESPONSE).replace('"Hel"', '"Hal"')).ok).toBe(false);
    expect(verifyResponse(body, { requestBody: REQUEST.replace("hi", "ho") })).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/request_sha256/),
    });
    const otherSignature = proofFor(RESPONSE, REQUEST, forgerKey).signature;
    expect(
      verifyResponse(edit(body, (b) => Object.assign(b.darkbloom, { signature: otherSignature }))),
    ).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/signature does not verify/),
    });
  });

  it("refuses version 1 proofs, unsigned, missing and malformed ones, and incomplete streams", () => {
    const body = chatBody(RESPONSE);
    const v1 = edit(body, (b) => {
      delete b.darkbloom.version;
      delete b.darkbloom.usage;
    });
    expect(verifyResponse(v1)).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/version is missing/),
    });
    expect(
      verifyResponse(edit(body, (b) => Object.assign(b.darkbloom, { signature: null, signing_key: null }))),
    ).toMatchObject({ ok: false, reason: expect.stringMatching(/not signed/) });
    expect(verifyResponse({ model: "m", choices: [] })).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/no darkbloom/),
    });
    expect(verifyResponse(edit(body, (b) => delete b.model))).toMatchObject({ ok: false });
    expect(verifyResponse("not json")).toMatchObject({ ok: false });
    expect(verifyResponse(sseTranscript(RESPONSE).replace("data: [DONE]\n\n", ""))).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/\[DONE\]/),
    });
    expect(
      verifyResponseSignature(new Uint8Array(3), new Uint8Array(32), new Uint8Array(32), new Uint8Array(8)),
    ).toBe(false);
  });
});

describe("responses with logprobs (version 3)", () => {
  const f = Math.fround;
  const bytes = (s: string) => new TextEncoder().encode(s);
  // "Hé👋": "H", "é", then the emoji split across two tokens (neither is a whole character).
  const emoji = bytes("👋");
  const ENTRIES: SignedLogprob[] = [
    {
      token: bytes("H"),
      logprob: f(-0.1),
      top: [
        { token: bytes("H"), logprob: f(-0.1) },
        { token: bytes("1"), logprob: f(-3.5) },
      ],
    },
    {
      token: bytes("é"),
      logprob: f(-1.25),
      top: [
        { token: bytes("bytes:x"), logprob: f(-0.5) },
        { token: bytes("é"), logprob: f(-1.25) },
      ],
    },
    {
      token: emoji.subarray(0, 2),
      logprob: f(-2),
      top: [
        { token: bytes(""), logprob: f(-2) },
        { token: emoji.subarray(0, 2), logprob: f(-2) },
      ],
    },
    { token: emoji.subarray(2), logprob: f(-9999), top: [] },
  ];
  const WITH: SignedResponse = {
    providerId: "prov_test",
    model: "m",
    choices: [
      { ...textChoices(["Hé👋"], ["stop"])[0]!, logprobs: ENTRIES },
      { ...textChoices([""], ["length"])[0]!, index: 1, logprobs: [] },
    ],
    usage: { promptTokens: 9, completionTokens: 4 },
  };

  it("records the entries: another figure, byte or alternative is another hash", () => {
    const base = hex(responseSha256(WITH));
    const [first, second] = WITH.choices as [SignedResponse["choices"][0], SignedResponse["choices"][0]];
    const entries = ENTRIES.map((e) => ({ ...e, top: [...e.top] }));
    const variants: SignedResponse[] = [
      { ...WITH, choices: [{ ...first, logprobs: null }, second] },
      { ...WITH, choices: [first, { ...second, logprobs: null }] },
      { ...WITH, choices: [{ ...first, logprobs: entries.slice(1) }, second] },
      {
        ...WITH,
        choices: [
          { ...first, logprobs: [{ ...entries[0]!, logprob: f(-0.2) }, ...entries.slice(1)] },
          second,
        ],
      },
      {
        ...WITH,
        choices: [
          { ...first, logprobs: [{ ...entries[0]!, top: entries[0]!.top.slice(1) }, ...entries.slice(1)] },
          second,
        ],
      },
      {
        ...WITH,
        choices: [
          { ...first, logprobs: [{ ...entries[0]!, token: bytes("h") }, ...entries.slice(1)] },
          second,
        ],
      },
    ];
    expect(new Set([base, ...variants.map((v) => hex(responseSha256(v)))]).size).toBe(variants.length + 1);
    expect(() =>
      responseSha256({
        ...WITH,
        choices: [{ ...first, logprobs: [{ ...entries[0]!, logprob: -0.1 }] }, second],
      }),
    ).toThrow(/binary32/);
  });

  it("verifies as the coordinator shows them: a chat body and a stream", () => {
    for (const saved of [chatBody(WITH), sseTranscript(WITH)]) {
      const result = verifyResponse(saved, { requestBody: REQUEST, signingKey: base64Key(privateKey) });
      expect(result).toMatchObject({ ok: true, pinned: true });
      if (result.ok) expect(result.response.choices[0]?.logprobs).toEqual(ENTRIES);
    }
    // The bytes each token shows are its own: the split emoji is U+FFFD in `token`, exact in `bytes`.
    const shown = chatBody(WITH).choices[0].logprobs.content;
    expect(shown[2]).toMatchObject({ token: "\uFFFD", bytes: [0xf0, 0x9f] });
  });

  it("verifies the legacy completions form, whose alternatives are an object", () => {
    const completion: SignedResponse = { ...WITH, choices: [WITH.choices[0]!] };
    const { logprobs } = completionLogprobs(ENTRIES);
    expect(logprobs).toMatchObject({
      tokens: ["H", "é", "bytes:\\xf0\\x9f", "bytes:\\x91\\x8b"],
      text_offset: [0, 1, 2, 3],
      top_logprobs: [
        { H: f(-0.1), "1": f(-3.5) },
        { "bytes:\\x62\\x79\\x74\\x65\\x73\\x3a\\x78": f(-0.5), é: f(-1.25) },
        {},
        {},
      ],
    });
    const body = {
      object: "text_completion",
      model: "m",
      choices: [{ text: "Hé👋", index: 0, logprobs, finish_reason: "stop" }],
      usage: usageOf(completion),
      darkbloom: proofFor(completion, "{}"),
    };
    // JSON reorders "1" before "H": the order read back is canonical anyway.
    const result = verifyResponse(JSON.stringify(body));
    expect(result.ok).toBe(true);
    // Streamed in two chunks: text_offset runs on from one to the next.
    const firstHalf = completionLogprobs(ENTRIES.slice(0, 2));
    const secondHalf = completionLogprobs(ENTRIES.slice(2), firstHalf.offset);
    const head = { id: "cmpl-1", object: "text_completion", created: 1, model: "m" };
    const events = [
      { ...head, choices: [{ text: "Hé", index: 0, logprobs: firstHalf.logprobs, finish_reason: null }] },
      { ...head, choices: [{ text: "👋", index: 0, logprobs: secondHalf.logprobs, finish_reason: null }] },
      {
        ...head,
        choices: [
          {
            text: "",
            index: 0,
            logprobs: completionLogprobs([], secondHalf.offset).logprobs,
            finish_reason: "stop",
          },
        ],
      },
      { ...head, choices: [], darkbloom: proofFor(completion, "{}") },
    ];
    const stream = [...events.map((e) => JSON.stringify(e)), "[DONE]"].map((e) => `data: ${e}\n\n`).join("");
    expect(verifyResponse(stream).ok).toBe(true);
    expect(verifyResponse(stream.replace('"text_offset":[2,3]', '"text_offset":[0,1]'))).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/text_offset/),
    });
  });

  const forgeries: Array<[string, (b: Body) => void, RegExp]> = [
    [
      "a figure changed in its last digits",
      (b) => (b.choices[0].logprobs.content[0].logprob = -0.10000000149011613),
      /binary32/,
    ],
    [
      "a figure changed",
      (b) => (b.choices[0].logprobs.content[0].logprob = f(-0.01)),
      /response_sha256 does not match/,
    ],
    [
      "a token's text that is not its bytes",
      (b) => (b.choices[0].logprobs.content[0].token = "h"),
      /not the text of its bytes/,
    ],
    [
      "a dropped alternative",
      (b) => b.choices[0].logprobs.content[0].top_logprobs.pop(),
      /response_sha256 does not match/,
    ],
    [
      "a field no signature covers",
      (b) => (b.choices[0].logprobs.content[0].confidence = 1),
      /carries confidence/,
    ],
    [
      "a refusal's tokens",
      (b) => (b.choices[0].logprobs.refusal = [{ token: "no" }]),
      /refusal holds tokens/,
    ],
  ];
  for (const [name, change, reason] of forgeries) {
    it(`refuses ${name}`, () => {
      expect(verifyResponse(edit(chatBody(WITH), change))).toMatchObject({
        ok: false,
        reason: expect.stringMatching(reason),
      });
    });
  }

  it("still verifies version 2 proofs, which cover no logprobs", () => {
    expect(verifyResponse(chatBody(RESPONSE, proofFor(RESPONSE, REQUEST, privateKey, 2)))).toMatchObject({
      ok: true,
    });
    expect(verifyResponse(chatBody(WITH, proofFor(WITH, REQUEST, privateKey, 2)))).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/version 2 signature does not cover/),
    });
    // A version 3 signature does not pass for version 2 (the domains differ).
    const crossed = edit(chatBody(RESPONSE), (b) => (b.darkbloom.version = 2));
    expect(verifyResponse(crossed)).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/signature does not verify/),
    });
    expect(verifyResponse(edit(chatBody(RESPONSE), (b) => (b.darkbloom.version = 4)))).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/checks version 2 or 3/),
    });
  });
});

describe("in a browser (WebCrypto)", () => {
  it("gives every case above the result node:crypto gave, reason for reason", async () => {
    expect(cases.length).toBeGreaterThan(40);
    for (const { saved, options, result } of cases) {
      expect(await verifyResponseWeb(saved, options ?? {}, crypto.subtle)).toEqual(result);
    }
  });

  it("reads only strict DER signatures, as OpenSSL does", () => {
    const message = new TextEncoder().encode("m");
    for (let i = 0; i < 50; i++) {
      // Random signatures: r and s of 31 to 33 DER bytes (shorter values, values with a high bit).
      const raw = derToP1363(sign("sha256", message, privateKey));
      expect(raw && verify("sha256", message, { key: privateKey, dsaEncoding: "ieee-p1363" }, raw)).toBe(
        true,
      );
    }
    const der = sign("sha256", message, privateKey);
    const padded = Buffer.concat([
      Buffer.from([0x30, der[1]! + 1, 0x02, der[3]! + 1, 0x00]),
      der.subarray(4),
    ]);
    expect(derToP1363(padded)).toBeUndefined(); // a leading zero the integer does not need
    expect(derToP1363(Buffer.concat([der, Buffer.from([0])]))).toBeUndefined(); // trailing bytes
    expect(derToP1363(der.subarray(0, der.length - 1))).toBeUndefined();
  });
});
