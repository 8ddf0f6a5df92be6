import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { InferenceService } from "@darkbloom/protocol/inference/v1";
import type { SignedLogprob } from "@darkbloom/protocol/logprobs";
import { ModelFeature } from "@darkbloom/protocol/provider/v1";
import { verifyResponse } from "@darkbloom/protocol/verifiable-response";
import { newSigningKey, type Script, ScriptedProvider } from "@darkbloom/testing";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  postJson,
  readJson,
  startTestCoordinator,
  type TestCoordinator,
  waitFor,
} from "../testing/test-coordinator.js";
import { startTestPostgres, type TestPostgres } from "../testing/test-database.js";
import { LOGPROBS_INVALID } from "./logprobs-check.js";

// Log-probabilities through the coordinator with scripted providers: OpenAI's shapes on chat and
// completions, streamed and whole, signed and verified; routed only to providers that report them;
// and a provider whose entries cannot be a model's (or do not spell its text) cut and untrusted while
// another serves the request.

const MODEL = "m";
const f = Math.fround;
const utf8 = (s: string) => new TextEncoder().encode(s);
let db: TestPostgres;
let t: TestCoordinator;
const providers: ScriptedProvider[] = [];
const key = newSigningKey();

/** "Hé" then "👋" split across two tokens. */
const EMOJI = utf8("👋");
function entries(top = 2): SignedLogprob[] {
  const pieces = [utf8("H"), utf8("é"), EMOJI.subarray(0, 2), EMOJI.subarray(2)];
  return pieces.map((token, i) => ({
    token,
    logprob: f(-0.25 * (i + 1)),
    top: [
      { token, logprob: f(-0.25 * (i + 1)) },
      { token: utf8(`alt${i}`), logprob: f(-3) },
    ].slice(0, top),
  }));
}

async function provider(
  script: Partial<Script> = {},
  features = [ModelFeature.LOGPROBS],
): Promise<ScriptedProvider> {
  const p = new ScriptedProvider({
    baseUrl: t.url,
    models: [{ id: MODEL, contextLength: 2048, features }],
    responseSigningKey: key.privateKey,
    // The scripted provider writes text as UTF-8 per chunk: the emoji's halves go in one chunk.
    script: () => ({ tokens: ["H", "é", "👋", ""], ...script }),
  });
  providers.push(p);
  await p.start();
  return p;
}

const reasonCodes = (p: ScriptedProvider) => p.runtimeStatuses.flatMap((s) => s.reasons.map((r) => r.code));

/** A script of the tokens above with their entries, the emoji's two tokens sent together. */
function scored(list: SignedLogprob[] = entries()): Partial<Script> {
  // One entry per scripted token: the scripted provider sends entries by token position, so the
  // emoji is one scripted "token" whose two entries go together.
  return { tokens: ["H", "é", "👋", ""], logprobs: list, tokensPerChunk: 2 };
}

beforeAll(async () => {
  db = await startTestPostgres();
  t = await startTestCoordinator(db.url, { queueTimeoutMs: 500, maxRetries: 1 });
  await t.coordinator.catalog.upsert({
    id: MODEL,
    inputMicroUsdPerMillion: 1_000_000n,
    outputMicroUsdPerMillion: 1_000_000n,
  });
}, 120_000);
afterEach(async () => {
  await Promise.all(providers.splice(0).map((p) => p.stop().catch(() => undefined)));
  await waitFor(() => t.coordinator.registry.size === 0, 5_000, "providers to leave");
});
afterAll(async () => {
  await t?.close();
  await db?.stop();
});

const chat = (extra: Record<string, unknown> = {}) => ({
  model: MODEL,
  messages: [{ role: "user", content: "hi" }],
  logprobs: true,
  top_logprobs: 2,
  ...extra,
});

describe("logprobs", () => {
  it("a chat body shows each token with its bytes and alternatives, signed and verifiable", async () => {
    await provider(scored());
    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, chat());
    expect(res.status).toBe(200);
    const body = await readJson(res);
    expect(body.choices[0].message.content).toBe("Hé👋");
    const content = body.choices[0].logprobs.content;
    expect(content.map((e: { token: string }) => e.token)).toEqual(["H", "é", "\uFFFD", "\uFFFD\uFFFD"]);
    expect(content[2]).toMatchObject({ bytes: [0xf0, 0x9f], logprob: f(-0.75) });
    expect(content[0].top_logprobs).toEqual([
      { token: "H", logprob: f(-0.25), bytes: [72] },
      { token: "alt0", logprob: f(-3), bytes: [...utf8("alt0")] },
    ]);
    expect(body.choices[0].logprobs.refusal).toBeNull();
    expect(body.darkbloom.version).toBe(3);
    expect(verifyResponse(body, { signingKey: Buffer.from(key.publicKey).toString("base64") })).toMatchObject(
      {
        ok: true,
        pinned: true,
      },
    );
  });

  it("a chat stream carries each chunk's tokens, and the saved stream verifies", async () => {
    await provider(scored());
    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, chat({ stream: true }));
    const transcript = await res.text();
    const events = transcript
      .split("\n\n")
      .filter((e) => e.startsWith("data: {"))
      .map((e) => JSON.parse(e.slice(6)));
    const deltas = events.filter((e) => e.choices?.length > 0);
    const tokens = deltas.flatMap((e) =>
      e.choices[0].logprobs.content.map((c: { bytes: number[] }) => c.bytes),
    );
    expect(Buffer.concat(tokens.map((b: number[]) => Buffer.from(b))).toString()).toBe("Hé👋");
    // The closing event says logprobs were asked for, with no tokens of its own.
    expect(deltas.at(-1).choices[0]).toMatchObject({ finish_reason: "stop", logprobs: { content: [] } });
    expect(verifyResponse(transcript).ok).toBe(true);
  });

  it("text completions show the legacy form (bytes: for parts of a character), verifiable", async () => {
    await provider(scored());
    const res = await postJson(t.url, "/v1/completions", t.apiKey, {
      model: MODEL,
      prompt: "x",
      logprobs: 2,
    });
    const body = await readJson(res);
    expect(body.choices[0].logprobs).toEqual({
      tokens: ["H", "é", "bytes:\\xf0\\x9f", "bytes:\\x91\\x8b"],
      token_logprobs: [f(-0.25), f(-0.5), f(-0.75), f(-1)],
      top_logprobs: [
        { H: f(-0.25), alt0: f(-3) },
        { é: f(-0.5), alt1: f(-3) },
        { "bytes:\\xf0\\x9f": f(-0.75), alt2: f(-3) },
        { "bytes:\\x91\\x8b": f(-1), alt3: f(-3) },
      ],
      text_offset: [0, 1, 2, 3],
    });
    expect(verifyResponse(body).ok).toBe(true);
    const stream = await postJson(t.url, "/v1/completions", t.apiKey, {
      model: MODEL,
      prompt: "x",
      logprobs: 2,
      stream: true,
    });
    expect(verifyResponse(await stream.text()).ok).toBe(true);
  });

  it("the typed Connect calls carry the same entries", async () => {
    await provider(scored(entries(1)));
    const client = createClient(InferenceService, createGrpcTransport({ baseUrl: t.url }));
    const headers = { authorization: `Bearer ${t.apiKey}` };
    const r = await client.createChatCompletion(
      { model: MODEL, messages: [{ role: "user", content: "hi" }], sampling: { topLogprobs: 1 } },
      { headers },
    );
    const lp = r.choices[0]!.logprobs;
    expect(lp.map((e) => e.token)).toEqual(["H", "é", "\uFFFD", "\uFFFD\uFFFD"]);
    expect(lp[0]).toMatchObject({ logprob: f(-0.25), bytes: utf8("H") });
    expect(lp[0]!.topLogprobs).toHaveLength(1);
  });

  it("is routed only to providers that report them: a 503 says none does", async () => {
    await provider({}, []);
    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, chat());
    expect(res.status).toBe(503);
    expect((await readJson(res)).error.message).toMatch(/reports log-probabilities/);
  });

  const liars: Array<[string, () => SignedLogprob[]]> = [
    [
      "bytes that are not the text",
      () => entries().map((e, i) => (i === 1 ? { ...e, token: utf8("e") } : e)),
    ],
    ["a positive logprob", () => entries().map((e, i) => (i === 0 ? { ...e, logprob: 0.5 } : e))],
    [
      "more alternatives than asked",
      () => entries(2).map((e) => ({ ...e, top: [...e.top, { token: utf8("x"), logprob: f(-5) }] })),
    ],
    ["alternatives out of order", () => entries().map((e) => ({ ...e, top: [...e.top].reverse() }))],
    [
      "alternatives summing past 1",
      () =>
        entries().map((e) => ({
          ...e,
          top: [
            { token: utf8("a"), logprob: f(-0.1) },
            { token: utf8("b"), logprob: f(-0.2) },
          ],
        })),
    ],
    [
      "a token likelier than the likeliest",
      () => entries().map((e) => ({ ...e, top: [{ token: utf8("z"), logprob: f(-2) }] })),
    ],
  ];
  for (const [name, list] of liars) {
    it(`a provider sending ${name} is cut and untrusted; another serves`, async () => {
      const liar = await provider(scored(list()));
      // With only the liar connected the request fails once it is cut (nothing was shown).
      const res1 = await postJson(t.url, "/v1/chat/completions", t.apiKey, chat());
      expect(res1.status).toBe(502);
      await waitFor(() => reasonCodes(liar).includes(LOGPROBS_INVALID), 5_000, "the liar to be told");
      const honest = await provider(scored());
      const res2 = await postJson(t.url, "/v1/chat/completions", t.apiKey, chat());
      expect(res2.status).toBe(200);
      expect(verifyResponse(await readJson(res2)).ok).toBe(true);
      expect(reasonCodes(honest)).not.toContain(LOGPROBS_INVALID);
    });
  }
});
