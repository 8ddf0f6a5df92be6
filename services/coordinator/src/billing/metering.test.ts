import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ModelTokenizer, synthesizeModel } from "@darkbloom/models";
import { readSse, type Script, ScriptedProvider } from "@darkbloom/testing";
import { getLlama, type Llama, LlamaLogLevel } from "node-llama-cpp";
import pg from "pg";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { uploadVocabulary, vocabularyOf } from "../catalog/vocabulary-upload.js";
import { ledgerBalance, settledReservation } from "../testing/ledger-queries.js";
import {
  adminClient,
  postJson,
  readJson,
  startTestCoordinator,
  type TestCoordinator,
} from "../testing/test-coordinator.js";
import { startTestPostgres, type TestPostgres } from "../testing/test-database.js";
import { completedCharge, cost } from "./pricing.js";
import { MeteringViolation } from "./usage-meter.js";

// The attacks of a provider that lies about token counts (issue: "billing by claim"), through the
// API, against real PostgreSQL: each test fails on a coordinator that bills what providers claim.

let server: TestPostgres;
let t: TestCoordinator;
let pool: pg.Pool;
const price = { inputMicroUsdPerMillion: 1_000_000n, outputMicroUsdPerMillion: 2_000_000n }; // 1 and 2 µUSD a token
const providers: ScriptedProvider[] = [];

let dir: string;
let llama: Llama;
/** The "counted" model's tokenizer, as the test counts: from the same vocabulary the coordinator has. */
let counter: ModelTokenizer;

beforeAll(async () => {
  server = await startTestPostgres();
  t = await startTestCoordinator(server.url, { maxRetries: 0 });
  await t.coordinator.catalog.upsert({ id: "paid", ...price });
  await t.coordinator.catalog.upsert({ id: "counted", ...price });
  pool = new pg.Pool({ connectionString: t.coordinator.databaseUrl });
  dir = await mkdtemp(join(tmpdir(), "darkbloom-metering-"));
  const model = join(dir, "tiny.gguf");
  await synthesizeModel({ shape: "tiny", seed: 9, outPath: model });
  await uploadVocabulary(admin(), "counted", await vocabularyOf(model));
  llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: 1 });
  counter = await ModelTokenizer.open(llama, model);
}, 120_000);
afterEach(async () => {
  await Promise.all(providers.splice(0).map((p) => p.stop()));
});
afterAll(async () => {
  await counter?.dispose();
  await llama?.dispose();
  if (dir) await rm(dir, { recursive: true, force: true });
  await pool?.end();
  await t?.close();
  await server?.stop();
});

const admin = () => adminClient(t.url);

async function provider(script: Script, machineId: string, model = "paid"): Promise<ScriptedProvider> {
  const p = new ScriptedProvider({
    baseUrl: t.url,
    models: [{ id: model }],
    machineId,
    script: () => script,
  });
  providers.push(p);
  await p.start();
  return p;
}

const settled = (requestId: string) => settledReservation(pool, requestId);
const balance = (account: string) => ledgerBalance(pool, account);

async function funded(): Promise<{ id: string; key: string }> {
  const created = await t.coordinator.accounts.createAccount({
    name: "payer",
    initialCreditMicroUsd: 1_000_000n,
  });
  return { id: created.account.id, key: created.secret };
}

async function ledgerClean(): Promise<void> {
  expect((await admin().verifyLedger({})).ok).toBe(true);
}

/** The reason codes the coordinator sent the provider when it stopped routing to it. */
function reasonCodes(p: ScriptedProvider): string[] {
  return p.runtimeStatuses.flatMap((s) => s.reasons.map((r) => r.code));
}

const chat = (extra: Record<string, unknown> = {}) => ({
  model: "paid",
  messages: [{ role: "user", content: "What is the price of tea?" }],
  ...extra,
});

function contentOf(events: { data: string }[]): string {
  return events
    .map((e) => e.data)
    .filter((d) => d !== "[DONE]")
    .map((d) => JSON.parse(d).choices?.[0]?.delta?.content ?? "")
    .join("");
}

describe("a provider lying about token counts", () => {
  it("is not paid for 500 tokens claimed on the one byte 'x': the response is cut and the provider untrusted", async () => {
    const liar = await provider({ tokens: ["x"], claimedTokensPerChunk: 500 }, "m-inflate");
    const payer = await funded();
    const res = await postJson(t.url, "/v1/chat/completions", payer.key, chat({ max_tokens: 1000 }));
    expect(res.status).toBe(502);
    expect((await readJson(res)).error.code).toBe("provider_error");
    const r = await settled(res.headers.get("x-request-id") ?? "");
    expect(r.charged).toBe("0");
    expect(r.completion_tokens).toBe(0);
    expect(await balance(payer.id)).toBe(1_000_000n);
    await expect.poll(() => reasonCodes(liar)).toContain(MeteringViolation.tokensInflated);
    await ledgerClean();
  });

  it("cannot make the consumer pay the whole hold by claiming past max_tokens: only accepted tokens are charged", async () => {
    // Each chunk "t0 " (3 bytes) claims 3 tokens: believable per chunk, but the second passes max_tokens 4.
    const liar = await provider(
      { tokens: ["t0 ", "t1 ", "t2 ", "t3 "], claimedTokensPerChunk: 3, interTokenDelayMs: 2 },
      "m-over-max",
    );
    const payer = await funded();
    const res = await postJson(
      t.url,
      "/v1/chat/completions",
      payer.key,
      chat({ max_tokens: 4, stream: true }),
    );
    const { events } = await readSse(res);
    const data = events.map((e) => e.data);
    expect(data.at(-1)).toBe("[DONE]");
    expect(JSON.parse(data.at(-2) ?? "{}").error.code).toBe("provider_metering_violation");
    expect(contentOf(events)).toBe("t0 ");
    const r = await settled(res.headers.get("x-request-id") ?? "");
    expect(r.outcome).toBe("failed");
    expect(r.completion_tokens).toBe(3);
    expect(BigInt(r.charged ?? "0")).toBe(cost(price, r.prompt_tokens ?? 0, 3));
    expect(BigInt(r.charged ?? "0")).toBeLessThan(BigInt(r.held));
    await expect.poll(() => reasonCodes(liar)).toContain(MeteringViolation.maxTokensExceeded);
    await ledgerClean();
  });

  it("cannot stream text on chunks claiming no tokens: the text is bounded and the stream cut", async () => {
    const text = "hello world ".repeat(10); // 120 bytes a chunk
    const liar = await provider(
      { tokens: Array.from({ length: 200 }, () => text), claimedTokensPerChunk: 0 },
      "m-zero",
    );
    const payer = await funded();
    const res = await postJson(
      t.url,
      "/v1/chat/completions",
      payer.key,
      chat({ max_tokens: 16, stream: true }),
    );
    const { events } = await readSse(res);
    const data = events.map((e) => e.data);
    expect(JSON.parse(data.at(-2) ?? "{}").error.code).toBe("provider_metering_violation");
    // At most one token's worth of text rides free before the stream is cut.
    expect(Buffer.byteLength(contentOf(events))).toBeLessThanOrEqual(256);
    await expect.poll(() => reasonCodes(liar)).toContain(MeteringViolation.chunkOversized);
    const r = await settled(res.headers.get("x-request-id") ?? "");
    expect(r.completion_tokens).toBe(0);
    await ledgerClean();
  });

  it("cannot inflate the final usage: a completion claim the chunks do not bear out is refused", async () => {
    const liar = await provider({ tokens: ["a ", "b ", "c "], completionTokens: 500 }, "m-usage");
    const payer = await funded();
    const res = await postJson(t.url, "/v1/chat/completions", payer.key, chat({ max_tokens: 1000 }));
    expect(res.status).toBe(502);
    const r = await settled(res.headers.get("x-request-id") ?? "");
    expect(r.charged).toBe("0");
    await expect.poll(() => reasonCodes(liar)).toContain(MeteringViolation.usageMismatch);
    await ledgerClean();
  });

  it("cannot inflate the prompt count past what the prompt's bytes can tokenize to", async () => {
    const liar = await provider({ tokens: ["a "], promptTokens: 4_000 }, "m-prompt");
    const payer = await funded();
    const res = await postJson(t.url, "/v1/chat/completions", payer.key, chat({ max_tokens: 10 }));
    expect(res.status).toBe(502);
    expect((await settled(res.headers.get("x-request-id") ?? "")).charged).toBe("0");
    await expect.poll(() => reasonCodes(liar)).toContain(MeteringViolation.usageMismatch);
  });

  it("shows the consumer exactly the usage it is charged for", async () => {
    await provider({ tokens: ["one ", "two ", "three "], interTokenDelayMs: 1 }, "m-honest");
    const payer = await funded();
    const res = await postJson(
      t.url,
      "/v1/chat/completions",
      payer.key,
      chat({ max_tokens: 100, stream: true, stream_options: { include_usage: true } }),
    );
    const { events } = await readSse(res);
    const usage = events
      .map((e) => e.data)
      .filter((d) => d !== "[DONE]")
      .map((d) => JSON.parse(d).usage)
      .find((u) => u);
    expect(usage.completion_tokens).toBe(3);
    const r = await settled(res.headers.get("x-request-id") ?? "");
    expect(r.outcome).toBe("completed");
    expect(r.prompt_tokens).toBe(usage.prompt_tokens);
    expect(r.completion_tokens).toBe(usage.completion_tokens);
    expect(BigInt(r.charged ?? "0")).toBe(
      completedCharge(price, usage.prompt_tokens, usage.completion_tokens),
    );
    await ledgerClean();
  });

  it("charges the prompt of a request cancelled after the provider accepted it, before any token", async () => {
    const slow = await provider({ tokens: ["late "], firstTokenDelayMs: 5_000 }, "m-prefill");
    const payer = await funded();
    const ac = new AbortController();
    const res = postJson(t.url, "/v1/chat/completions", payer.key, chat({ max_tokens: 10 }), {
      signal: ac.signal,
    }).catch(() => undefined);
    await expect.poll(() => slow.received.length).toBe(1);
    // Accepted is sent at once; give it a moment to reach the coordinator before hanging up.
    await new Promise((r) => setTimeout(r, 200));
    ac.abort();
    await res;
    const { rows } = await pool.query<{ request_id: string }>(
      "SELECT request_id FROM reservations WHERE account_id = $1",
      [payer.id],
    );
    const r = await settled(rows[0]?.request_id ?? "");
    expect(r.outcome).toBe("cancelled");
    expect(r.completion_tokens).toBe(0);
    expect(r.prompt_tokens ?? 0).toBeGreaterThan(0);
    expect(BigInt(r.charged ?? "0")).toBe(cost(price, r.prompt_tokens ?? 0, 0));
    expect(BigInt(r.charged ?? "0")).toBeGreaterThan(0n);
    await ledgerClean();
  });
});

describe("a provider of a model whose vocabulary the coordinator has", () => {
  const messages = [{ role: "user" as const, content: "What is the price of tea?" }];
  const counted = (extra: Record<string, unknown> = {}) => ({ ...chat(extra), model: "counted" });
  const promptTokens = () => counter.countPrompt({ kind: "chat", messages });

  it("is paid exactly the count of the text it delivered and of the prompt, which the consumer is shown", async () => {
    const tokens = ["Hello", " wörld", " 🙂", "!"];
    const completion = counter.countText(tokens.join(""));
    await provider(
      { tokens, completionTokens: completion, promptTokens: promptTokens() },
      "c-honest",
      "counted",
    );
    const payer = await funded();
    const res = await postJson(t.url, "/v1/chat/completions", payer.key, counted({ max_tokens: 50 }));
    expect(res.status).toBe(200);
    const body = await readJson(res);
    expect(body.usage).toMatchObject({ prompt_tokens: promptTokens(), completion_tokens: completion });
    const r = await settled(res.headers.get("x-request-id") ?? "");
    expect(r.outcome).toBe("completed");
    expect(r.completion_tokens).toBe(completion);
    expect(BigInt(r.charged ?? "0")).toBe(completedCharge(price, promptTokens(), completion));
    const metering = await t.coordinator.metrics.registry.getSingleMetricAsString(
      "darkbloom_usage_metering_total",
    );
    expect(metering).toMatch(/darkbloom_usage_metering_total\{model="counted",mode="counted"\} 1/);
    expect(metering).not.toMatch(/model="counted",mode="(bounded|count_failed)"/);
    await ledgerClean();
  });

  it("is cut for one completion token more than its text counts to, though the bounds would allow it", async () => {
    const tokens = ["one ", "two ", "three "];
    const liar = await provider(
      { tokens, completionTokens: counter.countText(tokens.join("")) + 1, promptTokens: promptTokens() },
      "c-plus-one",
      "counted",
    );
    const payer = await funded();
    const res = await postJson(t.url, "/v1/chat/completions", payer.key, counted({ max_tokens: 50 }));
    expect(res.status).toBe(502);
    expect((await settled(res.headers.get("x-request-id") ?? "")).charged).toBe("0");
    await expect.poll(() => reasonCodes(liar)).toContain(MeteringViolation.usageMismatch);
    await ledgerClean();
  });

  it("is paid no more than max_tokens for text padded past what its tokens could say", async () => {
    // Four chunks of one claimed token each, every one carrying 200 bytes of one-letter words: within
    // the chunk checks (256 bytes a token), and about 100 tokens apiece when counted.
    const tokens = Array.from({ length: 4 }, () => "a ".repeat(100));
    const full = counter.countText(tokens.join(""));
    expect(full).toBeGreaterThan(100);
    // Claiming the count of all it sent: the count is capped at max_tokens, the claim refused.
    const greedy = await provider(
      { tokens, claimedTokensPerChunk: 1, completionTokens: full, promptTokens: promptTokens() },
      "c-padded",
      "counted",
    );
    const payer = await funded();
    const before = await balance(payer.id);
    const res = await postJson(t.url, "/v1/chat/completions", payer.key, counted({ max_tokens: 4 }));
    expect(res.status).toBe(502);
    expect((await settled(res.headers.get("x-request-id") ?? "")).charged).toBe("0");
    await expect.poll(() => reasonCodes(greedy)).toContain(MeteringViolation.usageMismatch);
    expect(await balance(payer.id)).toBe(before);
    // Claiming max_tokens: accepted, and charged exactly the prompt and four tokens.
    await provider(
      { tokens, claimedTokensPerChunk: 1, completionTokens: 4, promptTokens: promptTokens() },
      "c-padded-capped",
      "counted",
    );
    const capped = await postJson(t.url, "/v1/chat/completions", payer.key, counted({ max_tokens: 4 }));
    expect(capped.status).toBe(200);
    expect((await readJson(capped)).usage).toMatchObject({ completion_tokens: 4 });
    const r = await settled(capped.headers.get("x-request-id") ?? "");
    expect(r.completion_tokens).toBe(4);
    expect(BigInt(r.charged ?? "0")).toBe(completedCharge(price, promptTokens(), 4));
    await ledgerClean();
  });

  it("is cut for a prompt count one off the coordinator's", async () => {
    const tokens = ["a "];
    const liar = await provider(
      { tokens, completionTokens: counter.countText("a "), promptTokens: promptTokens() + 1 },
      "c-prompt",
      "counted",
    );
    const payer = await funded();
    const res = await postJson(t.url, "/v1/chat/completions", payer.key, counted({ max_tokens: 50 }));
    expect(res.status).toBe(502);
    expect((await settled(res.headers.get("x-request-id") ?? "")).charged).toBe("0");
    await expect.poll(() => reasonCodes(liar)).toContain(MeteringViolation.usageMismatch);
    // The coordinator counts with its port; a provider disagreeing is recounted by llama.cpp, whose
    // figure (the same) cuts it.
    const metering = await t.coordinator.metrics.registry.getSingleMetricAsString(
      "darkbloom_usage_metering_total",
    );
    expect(metering).toMatch(/darkbloom_usage_metering_total\{model="counted",mode="recounted"\} [1-9]/);
  });

  it("is never an older daemon reporting the tokens it sampled: it is routed only models counted by bounds", async () => {
    // A daemon from before usage_version 1 reports honest sampled counts, which a counted model's
    // check would take for lies: it must not be sent that model, and must not be cut for serving others.
    const tokens = ["one ", "two "];
    const old = new ScriptedProvider({
      baseUrl: t.url,
      models: [{ id: "counted" }, { id: "paid" }],
      machineId: "c-old-daemon",
      usageVersion: 0,
      script: () => ({ tokens }),
    });
    const current = await provider(
      { tokens, completionTokens: counter.countText(tokens.join("")), promptTokens: promptTokens() },
      "c-current-daemon",
      "counted",
    );
    providers.push(old);
    await old.start();
    const payer = await funded();
    for (let i = 0; i < 4; i++) {
      const res = await postJson(t.url, "/v1/chat/completions", payer.key, counted({ max_tokens: 50 }));
      expect(res.status).toBe(200);
    }
    expect(old.received).toHaveLength(0);
    expect(current.received).toHaveLength(4);
    const res = await postJson(t.url, "/v1/chat/completions", payer.key, chat({ max_tokens: 50 }));
    expect(res.status).toBe(200);
    expect(old.received).toHaveLength(1);
    expect(reasonCodes(old)).not.toContain(MeteringViolation.usageMismatch);
    await ledgerClean();
  });

  it("that fails mid-stream is paid the count of what reached the consumer, not the tokens it claimed", async () => {
    // 10 bytes a chunk claiming 8 tokens: within the bounds, about four times the count.
    const tokens = ["aaaa bbbb ", "cccc dddd ", "eeee ffff "];
    await provider(
      { tokens, claimedTokensPerChunk: 8, fail: { when: "after_tokens", afterTokens: 2 } },
      "c-fail",
      "counted",
    );
    const payer = await funded();
    const res = await postJson(
      t.url,
      "/v1/chat/completions",
      payer.key,
      counted({ max_tokens: 50, stream: true }),
    );
    const { events } = await readSse(res);
    expect(contentOf(events)).toBe("aaaa bbbb cccc dddd ");
    const r = await settled(res.headers.get("x-request-id") ?? "");
    expect(r.outcome).toBe("failed");
    const delivered = counter.countText("aaaa bbbb cccc dddd ");
    expect(delivered).toBeLessThan(16);
    expect(r.completion_tokens).toBe(delivered);
    expect(BigInt(r.charged ?? "0")).toBe(cost(price, promptTokens(), delivered));
    await ledgerClean();
  });
});
