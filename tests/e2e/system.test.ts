// The whole system on the testbed: PostgreSQL, the coordinator and three provider daemons (two
// serving `tiny`, one `tiny-llama`, one of them relayed through a tap that records its wire), each its
// own process, driven over HTTP and with the unchanged official openai SDK. The `tiny-llama` daemon
// keeps its attestation key in a TPM (a software TPM whose EK CA the coordinator is given), so the
// whole suite also runs once with a TPM-backed daemon.
import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { verifyResponse } from "@darkbloom/protocol/verifiable-response";
import {
  readSse,
  type SoftwareTpm,
  type SseEvent,
  softwareTpmTestable,
  startSoftwareTpm,
} from "@darkbloom/testing";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expectedCharge, startTestbed, type Testbed, type TestbedAccount } from "../testbed/index.js";

let testbed: Testbed;
let alice: TestbedAccount;
let tpm: SoftwareTpm | undefined;
const CREDIT = 100_000_000n; // $100
/** The trust the `tiny-llama` daemon earns: tpm with a software TPM, self_signed where none runs. */
const TPM_TRUST = softwareTpmTestable() ? "tpm" : "self_signed";

beforeAll(async () => {
  const tpmArgs = { provider: [] as string[], coordinator: [] as string[] };
  if (TPM_TRUST === "tpm") {
    tpm = await startSoftwareTpm();
    const bundle = join(tpm.workDir, "ek-ca.pem");
    await writeFile(bundle, tpm.ca.bundlePem);
    tpmArgs.provider = ["--tpm", tpm.tcti];
    tpmArgs.coordinator = ["--tpm-ek-ca", bundle];
  }
  testbed = await startTestbed({
    providers: [
      { models: ["tiny"], tap: true },
      { models: ["tiny"] },
      { models: ["tiny-llama"], args: tpmArgs.provider },
    ],
    // A request no provider may take (e.g. it asks for hardware trust) gets its 503 after this wait.
    coordinatorArgs: ["--queue-timeout", "3s", ...tpmArgs.coordinator],
  });
  alice = await testbed.createAccount(CREDIT);
}, 180_000);

afterAll(async () => {
  await testbed?.stop();
  await tpm?.stop();
}, 60_000);

/** A prompt no one else sends: it must appear nowhere but in the consumer's own request. */
function marker(): string {
  return `zebra-${randomBytes(6).toString("hex")}`;
}

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
}

/** Reads a whole SSE stream: the content, the usage chunk, the darkbloom proof, and the events. */
async function readStream(res: Response) {
  const events: SseEvent[] = [];
  let content = "";
  let usage: Usage | undefined;
  let proof: unknown;
  let done = 0;
  for (const e of (await readSse(res)).events) {
    events.push(e);
    if (e.data === "[DONE]") {
      done++;
      continue;
    }
    const chunk = JSON.parse(e.data) as {
      choices?: { delta?: { content?: string } }[];
      usage?: Usage | null;
      darkbloom?: unknown;
      error?: unknown;
    };
    content += chunk.choices?.[0]?.delta?.content ?? "";
    if (chunk.usage) usage = chunk.usage;
    if (chunk.darkbloom) proof = chunk.darkbloom;
  }
  return { events, content, usage, proof, done };
}

describe("the system testbed", () => {
  it("runs each provider daemon in its own process with its own data directory and PID file", async () => {
    const pids = new Set<number>();
    for (const p of testbed.providers) {
      expect(p.running).toBe(true);
      expect(await p.pidFromFile()).toBe(p.pid);
      pids.add(p.pid ?? 0);
    }
    pids.add(testbed.coordinator.pid ?? 0);
    expect(pids.size).toBe(4);
    expect(new Set(testbed.providers.map((p) => p.dataDir)).size).toBe(3);
  });

  it("serves a non-streaming completion with usage, timing and provider headers", async () => {
    const res = await testbed.chat(alice.apiKey, {
      model: "tiny",
      messages: [{ role: "user", content: "Hello there" }],
      max_tokens: 8,
      temperature: 0,
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as {
      object: string;
      choices: { message: { role: string; content: string }; finish_reason: string }[];
      usage: Usage;
    };
    expect(body.object).toBe("chat.completion");
    expect(body.choices[0]?.message.role).toBe("assistant");
    expect(body.choices[0]?.finish_reason).toBe("length");
    // Usage is what the text counts to, at most max_tokens (8 tokens were sampled: finish_reason
    // "length"; random weights write text that often re-tokenizes into more).
    const counts = await testbed.counts("tiny", "Hello there", body.choices[0]?.message.content ?? "", 8);
    expect(body.usage).toMatchObject({ prompt_tokens: counts.prompt, completion_tokens: counts.completion });
    expect(body.usage.completion_tokens).toBeLessThanOrEqual(8);
    expect(res.headers.get("x-request-id")).toMatch(/^req_/);
    const timing = JSON.parse(res.headers.get("x-timing") ?? "{}") as Record<string, number>;
    for (const phase of ["parse", "auth", "reserve", "route", "encrypt", "dispatch", "total"]) {
      expect(timing[phase], phase).toBeGreaterThanOrEqual(0);
    }
    expect(timing.total).toBeGreaterThan(0);
  });

  it("streams the same greedy answer, with exactly one [DONE] and include_usage", async () => {
    const request = {
      model: "tiny",
      messages: [{ role: "user", content: "Stream to me" }],
      max_tokens: 12,
      temperature: 0,
    };
    const whole = (await (await testbed.chat(alice.apiKey, request)).json()) as {
      choices: { message: { content: string } }[];
    };
    const res = await testbed.chat(alice.apiKey, {
      ...request,
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const s = await readStream(res);
    expect(s.done).toBe(1);
    expect(s.events.at(-1)?.data).toBe("[DONE]");
    expect(s.content).toBe(whole.choices[0]?.message.content);
    expect(s.usage?.completion_tokens).toBe(
      (await testbed.counts("tiny", "Stream to me", s.content, request.max_tokens)).completion,
    );
  });

  it("routes each model only to the daemons that serve it", async () => {
    const served = new Map<string, Set<number>>();
    for (const model of ["tiny", "tiny-llama", "tiny", "tiny-llama", "tiny", "tiny"]) {
      const res = await testbed.chat(alice.apiKey, {
        model,
        messages: [{ role: "user", content: "which one?" }],
        max_tokens: 2,
      });
      expect(res.status).toBe(200);
      await res.arrayBuffer();
      const provider = await testbed.providerById(res.headers.get("x-provider-id") ?? "");
      expect(provider.models).toContain(model);
      served.set(model, (served.get(model) ?? new Set()).add(provider.index));
    }
    expect([...(served.get("tiny-llama") ?? [])]).toEqual([2]);
    const models: string[] = [];
    for await (const m of testbed.openai(alice.apiKey).models.list()) models.push(m.id);
    expect(models.sort()).toEqual(["tiny", "tiny-llama"]);
  });

  it("serves concurrent users on both models and bills each exactly for its own usage", async () => {
    const users = await Promise.all(Array.from({ length: 6 }, () => testbed.createAccount(CREDIT)));
    const results = await Promise.all(
      users.flatMap((u, i) =>
        [0, 1, 2].map(async (j) => {
          const res = await testbed.chat(u.apiKey, {
            model: (i + j) % 3 === 0 ? "tiny-llama" : "tiny",
            messages: [{ role: "user", content: `user ${i} request ${j}` }],
            max_tokens: 6 + j,
            stream: j === 1,
            ...(j === 1 ? { stream_options: { include_usage: true } } : {}),
          });
          expect(res.status).toBe(200);
          const requestId = res.headers.get("x-request-id") ?? "";
          if (j === 1) {
            const s = await readStream(res);
            expect(s.done).toBe(1);
            expect(s.usage).toBeDefined();
            return { user: i, requestId, usage: s.usage as Usage };
          }
          return { user: i, requestId, usage: ((await res.json()) as { usage: Usage }).usage };
        }),
      ),
    );
    for (const [i, u] of users.entries()) {
      const mine = results.filter((r) => r.user === i);
      // Each request settles just after its response ended: wait for exactly these three.
      const records = await testbed.settledUsage(
        u.id,
        mine.map((r) => r.requestId),
      );
      for (const r of mine) {
        const record = records.get(r.requestId);
        expect(record?.outcome, r.requestId).toBe("completed");
        expect(record?.chargedMicroUsd, `${r.requestId} ${JSON.stringify(r.usage)}`).toBe(
          expectedCharge(r.usage),
        );
      }
      const spent = mine.reduce((sum, r) => sum + expectedCharge(r.usage), 0n);
      expect(spent).toBeGreaterThan(0n);
      expect(await testbed.balance(u.id)).toBe(CREDIT - spent);
    }
  });

  it("refuses a request the balance cannot cover with 402 insufficient_quota, charging nothing", async () => {
    const poor = await testbed.createAccount(500n);
    const res = await testbed.chat(poor.apiKey, {
      model: "tiny",
      messages: [{ role: "user", content: "please" }],
      max_tokens: 100,
    });
    expect(res.status).toBe(402);
    const body = (await res.json()) as { error: { type: string; code: string; message: string } };
    expect(body.error.code).toBe("insufficient_quota");
    expect(body.error.message).toMatch(/balance/i);
    expect(await testbed.balance(poor.id)).toBe(500n);

    const e = await testbed
      .openai(poor.apiKey)
      .chat.completions.create({
        model: "tiny",
        messages: [{ role: "user", content: "please" }],
        max_tokens: 100,
      })
      .catch((x: unknown) => x);
    expect(e).toBeInstanceOf(OpenAI.APIError);
    expect((e as InstanceType<typeof OpenAI.APIError>).status).toBe(402);
  });

  it("answers an unknown model with 404 model_not_found", async () => {
    const e = await testbed
      .openai(alice.apiKey)
      .chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "hi" }] })
      .catch((x: unknown) => x);
    expect(e).toBeInstanceOf(OpenAI.NotFoundError);
    expect((e as InstanceType<typeof OpenAI.NotFoundError>).code).toBe("model_not_found");
  });

  it("keeps the prompt and the answer off the provider's wire, its logs and the database", async () => {
    const tapped = testbed.providers[0];
    const tap = tapped?.tap;
    if (!tapped || !tap) throw new Error("provider 0 has no tap");
    const secret = marker();
    // An answer long enough to look for in the captured bytes: random weights sample the end of
    // text early now and then, so a short answer is asked for again (sampled anew).
    let answer = "";
    for (let attempt = 0; attempt < 5 && answer.length <= 8; attempt++) {
      tap.reset();
      const res = await testbed.chat(
        alice.apiKey,
        {
          model: "tiny",
          messages: [{ role: "user", content: `The password is ${secret}. Repeat it.` }],
          max_tokens: 24,
          stream: true,
        },
        { headers: { "x-darkbloom-providers": await testbed.providerIdOf(tapped) } },
      );
      expect(res.status).toBe(200);
      const s = await readStream(res);
      expect(s.done).toBe(1);
      answer = s.content.trim();
    }
    expect(answer.length).toBeGreaterThan(8);

    const { fromProvider, toProvider } = tap.captured();
    // The request did cross this wire (sealed), and the answer came back over it (sealed).
    expect(toProvider.length).toBeGreaterThan(secret.length);
    expect(fromProvider.length).toBeGreaterThan(answer.length);
    for (const bytes of [fromProvider, toProvider]) {
      expect(bytes.includes(secret)).toBe(false);
      expect(bytes.includes(Buffer.from(secret, "utf16le"))).toBe(false);
      expect(bytes.includes(answer)).toBe(false);
    }
    for (const p of [testbed.coordinator, ...testbed.providers]) {
      expect(await readFile(p.logFile, "utf8"), p.name).not.toContain(secret);
    }
    const tables = await testbed.postgres.query<{ name: string }>(
      "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public'",
    );
    expect(tables.length).toBeGreaterThan(5);
    for (const { name } of tables) {
      const rows = await testbed.postgres.query<{ row: string }>(
        `SELECT row_to_json(t)::text AS row FROM "${name}" t`,
      );
      expect(rows.map((r) => r.row).join("\n"), name).not.toContain(secret);
    }
  });

  it("reports the provider's trust in headers and a verifiable, signed proof", async () => {
    const body = JSON.stringify({
      model: "tiny-llama",
      messages: [{ role: "user", content: "prove it" }],
      max_tokens: 6,
    });
    // The provider's trust is judged from its first challenge on: wait for it rather than race it.
    await expect
      .poll(
        async () => {
          const list = (await (await fetch(`${testbed.baseUrl}/providers/attestation`)).json()) as {
            data: { trust_level: string; signer: string | null }[];
          };
          return list.data.filter((a) => a.trust_level === TPM_TRUST).length;
        },
        { timeout: 20_000 },
      )
      .toBeGreaterThan(0);
    // The tiny-llama daemon holds its key in the TPM; it also accepts a request that asks for tpm.
    const res = await testbed.chat(alice.apiKey, body, {
      headers: { "x-darkbloom-min-trust-level": TPM_TRUST },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-provider-trust-level")).toBe(TPM_TRUST);
    expect(res.headers.get("x-provider-attested")).toBe("true");
    const saved = await res.text();
    const attestations = (await (await fetch(`${testbed.baseUrl}/providers/attestation`)).json()) as {
      data: {
        provider_id: string;
        public_key: string | null;
        trust_level: string;
        signer: string | null;
        tpm: { ek_certified: boolean; activated: boolean; pcr_digest: string | null } | null;
      }[];
    };
    const published = attestations.data.find((a) => a.provider_id === res.headers.get("x-provider-id"));
    expect(published?.trust_level).toBe(TPM_TRUST);
    if (TPM_TRUST === "tpm") {
      expect(published).toMatchObject({ signer: "tpm", tpm: { ek_certified: true, activated: true } });
      expect(published?.tpm?.pcr_digest).toMatch(/^[0-9a-f]{64}$/);
    }
    const verified = verifyResponse(saved, { requestBody: body, signingKey: published?.public_key ?? "" });
    expect(verified).toMatchObject({ ok: true, proof: { trust_level: TPM_TRUST } });
    // One changed character in the answer fails the proof.
    const tampered = saved.replace(
      /"content":"(.)/,
      (_m, c: string) => `"content":"${c === "x" ? "y" : "x"}`,
    );
    expect(verifyResponse(tampered).ok).toBe(false);

    const refused = await testbed.chat(alice.apiKey, body, {
      headers: { "x-darkbloom-min-trust-level": "hardware" },
    });
    expect(refused.status).toBe(503);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe("model_not_available");
  });

  it("cancels a stream the consumer abandons: the slot is freed and only what was sent is billed", async () => {
    const user = await testbed.createAccount(CREDIT);
    const controller = new AbortController();
    const res = await testbed.chat(
      user.apiKey,
      {
        model: "tiny",
        messages: [{ role: "user", content: "hello there xx" }],
        max_tokens: 1500,
        temperature: 0,
        stream: true,
      },
      { signal: controller.signal },
    );
    expect(res.status).toBe(200);
    const reader = res.body?.getReader();
    await reader?.read();
    controller.abort();
    await reader?.cancel().catch(() => undefined);

    await expect
      .poll(async () => (await usageOf(user.apiKey))[0]?.state, { timeout: 15_000 })
      .toBe("settled");
    const [record] = await usageOf(user.apiKey);
    expect(record?.outcome).toBe("cancelled");
    expect(record?.completion_tokens ?? 1500).toBeLessThan(1500);
    expect(await testbed.balance(user.id)).toBe(CREDIT - BigInt(record?.charged_micro_usd ?? 0));
    await expect
      .poll(
        async () =>
          (await testbed.admin.listProviders({ model: "tiny" })).providers.every((p) => p.busySlots === 0),
        {
          timeout: 15_000,
        },
      )
      .toBe(true);
  });

  it("drives the unchanged openai SDK, streaming and not", async () => {
    const client = testbed.openai(alice.apiKey);
    const whole = await client.chat.completions.create({
      model: "tiny-llama",
      messages: [{ role: "user", content: "Hi" }],
      max_tokens: 5,
      temperature: 0,
    });
    const counted = await testbed.counts("tiny-llama", "Hi", whole.choices[0]?.message.content ?? "", 5);
    expect(whole.usage).toMatchObject({
      prompt_tokens: counted.prompt,
      completion_tokens: counted.completion,
    });
    const stream = await client.chat.completions.create({
      model: "tiny-llama",
      messages: [{ role: "user", content: "Hi" }],
      max_tokens: 5,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? "";
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe(whole.choices[0]?.message.content);
    expect(usage?.completion_tokens).toBe(counted.completion);
  });

  it("leaves usage, balances and the ledger consistent after the whole run", async () => {
    await testbed.settled();
    const records = await usageOf(alice.apiKey, 100);
    expect(records.length).toBeGreaterThan(10);
    const charged = records.reduce((sum, r) => sum + BigInt(r.charged_micro_usd ?? 0), 0n);
    for (const r of records.filter((x) => x.outcome === "completed")) {
      expect(BigInt(r.charged_micro_usd ?? -1)).toBe(
        expectedCharge({ prompt_tokens: r.prompt_tokens ?? 0, completion_tokens: r.completion_tokens ?? 0 }),
      );
    }
    expect(await testbed.balance(alice.id)).toBe(CREDIT - charged);
    const account = (await (
      await fetch(`${testbed.baseUrl}/account`, { headers: { authorization: `Bearer ${alice.apiKey}` } })
    ).json()) as { balance_micro_usd: number; held_micro_usd: number };
    expect(BigInt(account.balance_micro_usd)).toBe(CREDIT - charged);
    expect(account.held_micro_usd).toBe(0);
    const report = await testbed.verifyLedger();
    expect(report.discrepancies).toEqual([]);
    expect(report.openReservations).toBe(0n);
    expect(report.ok).toBe(true);
  });
});

interface UsageRow {
  request_id: string;
  state: string;
  outcome: string | null;
  prompt_tokens: number | null;
  completion_tokens: number | null;
  charged_micro_usd: number | null;
}

async function usageOf(apiKey: string, limit = 20): Promise<UsageRow[]> {
  const res = await fetch(`${testbed.baseUrl}/account/usage?limit=${limit}`, {
    headers: { authorization: `Bearer ${apiKey}` },
  });
  expect(res.status).toBe(200);
  return ((await res.json()) as { data: UsageRow[] }).data;
}
