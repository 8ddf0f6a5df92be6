import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { toBinary } from "@bufbuild/protobuf";
import { createLogger, startCoordinator } from "@darkbloom/coordinator";
import {
  createTestDatabase,
  postJson,
  startTestCoordinator,
  startTestPostgres,
  type TestCoordinator,
  type TestPostgres,
  waitFor,
} from "@darkbloom/coordinator/testing";
import { ConnectResponseSchema } from "@darkbloom/protocol/provider/v1";
import { BoxKeyPair } from "@darkbloom/protocol/sealed-box";
import { verifyResponse } from "@darkbloom/protocol/verifiable-response";
import { parseSse, readSse, ScriptedProvider, type ScriptedProviderOptions } from "@darkbloom/testing";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { ModelFile } from "../engine/engine.js";
import { describeHardware } from "../machine/hardware.js";
import { ScriptedEngine, type ScriptedEngineOptions } from "../testing/scripted-engine.js";
import { Attestor } from "../trust/attestor.js";
import type { AttestationSigner } from "../trust/signer.js";
import { SoftwareSigner } from "../trust/software-signer.js";
import { ProviderLink, type ResponseSigner } from "./link.js";

// The data path's security properties, with real components: PostgreSQL, the coordinator, the
// daemon's link (ProviderLink on a scripted engine, attested with a software key) and scripted
// providers that misbehave on purpose.

// biome-ignore lint/suspicious/noExplicitAny: response bodies are checked by assertions
const readJson = async (res: Response): Promise<any> => res.json();

const TINY: ModelFile = {
  id: "tiny",
  path: "/nonexistent/tiny.gguf",
  sizeBytes: 1_048_576,
  quantization: "Q8_0",
  sha256: "ab".repeat(32),
  architecture: "llama",
  contextLength: 2048,
};

let pg: TestPostgres;
beforeAll(async () => {
  pg = await startTestPostgres();
});
afterAll(async () => {
  await pg?.stop();
});

/** A TCP relay that records every byte in both directions: what an observer of the link sees. */
async function startTap(
  target: string,
): Promise<{ url: string; bytes: () => Buffer; close: () => Promise<void> }> {
  const { hostname, port } = new URL(target);
  const captured: Buffer[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => undefined);
      s.on("close", () => sockets.delete(s));
    }
    client.on("data", (b: Buffer) => {
      captured.push(b);
      upstream.write(b);
    });
    upstream.on("data", (b: Buffer) => {
      captured.push(b);
      client.write(b);
    });
    client.on("end", () => upstream.end());
    upstream.on("end", () => client.end());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    bytes: () => Buffer.concat(captured),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

describe("data path security", () => {
  let t: TestCoordinator;
  const links: ProviderLink[] = [];
  const scripted: ScriptedProvider[] = [];

  /** The real daemon link, attested with a software P-256 key that also signs its responses. */
  async function daemonLink(
    url: string,
    engineOptions: ScriptedEngineOptions = {},
    signers: { attestation?: AttestationSigner; response?: ResponseSigner } = {},
    logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" }),
  ): Promise<{ link: ProviderLink; engine: ScriptedEngine; signer: AttestationSigner }> {
    const engine = new ScriptedEngine(engineOptions);
    await engine.load(TINY);
    const machineId = `sec-${randomBytes(6).toString("hex")}`;
    const encryptionKey = BoxKeyPair.generate();
    const signer = signers.attestation ?? SoftwareSigner.ephemeral();
    const hardware = describeHardware();
    const attestor = await Attestor.create({
      signer,
      machineId,
      daemonVersion: "0.1.0",
      chip: hardware.chip ?? "",
      machineModel: hardware.machineModel ?? "",
      os: hardware.os ?? "",
      osVersion: hardware.osVersion ?? "",
      encryptionPublicKey: encryptionKey.publicKey,
      binarySha256: "cd".repeat(32),
      serialSha256: "",
      posture: { sip: "unknown", secureBoot: "unknown" },
    });
    const link = new ProviderLink({
      coordinatorUrl: url,
      engine,
      models: [TINY],
      machineId,
      encryptionKey,
      attestor,
      responseSigner: signers.response ?? signer,
      daemonVersion: "0.1.0",
      hardware,
      knobs: { kvBits: 8, maxContext: 4096, maxBatch: 4, idleTimeoutMinutes: 0, threads: 2 },
      backoff: { initialMs: 50, maxMs: 400 },
      logger,
    });
    links.push(link);
    link.start();
    await link.waitForRegistration(10_000);
    return { link, engine, signer };
  }

  async function provider(
    options: Partial<ScriptedProviderOptions> = {},
    url = t.url,
  ): Promise<ScriptedProvider> {
    const p = new ScriptedProvider({
      baseUrl: url,
      models: [{ id: "tiny", contextLength: 4096 }],
      ...options,
    });
    scripted.push(p);
    await p.start();
    return p;
  }

  const chat = (content: string, extra: Record<string, unknown> = {}) => ({
    model: "tiny",
    messages: [{ role: "user", content }],
    ...extra,
  });

  beforeAll(async () => {
    t = await startTestCoordinator(pg.url, { heartbeatIntervalMs: 500 });
  });
  afterEach(async () => {
    await Promise.all(links.splice(0).map((l) => l.close()));
    await Promise.all(scripted.splice(0).map((p) => p.stop()));
    await waitFor(() => t.coordinator.registry.size === 0, 5_000, "providers to leave");
  });
  afterAll(async () => {
    await t?.close();
  });

  it("the coordinator-provider link carries neither the prompt nor the completion in the clear", async () => {
    const tap = await startTap(t.url);
    try {
      const completion = `COMPLETION${randomBytes(4).toString("hex")}`;
      await daemonLink(tap.url, { tokensPerGeneration: 4, token: (i) => `${completion}-${i} ` });
      const prompt = `PROMPT${randomBytes(8).toString("hex")} please keep this private`;
      const whole = await postJson(t.url, "/v1/chat/completions", t.apiKey, chat(prompt));
      expect(whole.status).toBe(200);
      expect((await readJson(whole)).choices[0].message.content).toContain(completion);
      const streamed = await postJson(t.url, "/v1/completions", t.apiKey, {
        model: "tiny",
        prompt,
        stream: true,
      });
      expect((await streamed.text()).includes(completion)).toBe(true);
      const wire = tap.bytes();
      expect(wire.length).toBeGreaterThan(1000);
      for (const secret of [prompt.slice(0, 22), completion]) {
        expect(wire.includes(Buffer.from(secret))).toBe(false);
        expect(wire.includes(Buffer.from(secret, "utf16le"))).toBe(false);
      }
    } finally {
      await tap.close();
    }
  });

  it("the same tap sees the prompt when a development coordinator allows plaintext (control)", async () => {
    const dev = await startTestCoordinator(pg.url, { heartbeatIntervalMs: 500, requireEncryption: false });
    const tap = await startTap(dev.url);
    const p = new ScriptedProvider({ baseUrl: tap.url, models: [{ id: "tiny" }], encryption: false });
    try {
      await p.start();
      const prompt = `PROMPT${randomBytes(8).toString("hex")}`;
      const res = await postJson(dev.url, "/v1/chat/completions", dev.apiKey, chat(prompt));
      expect(res.status).toBe(200);
      expect(p.received[0]?.sealed).toBe(false);
      expect(tap.bytes().includes(Buffer.from(prompt))).toBe(true);
    } finally {
      await p.stop();
      await tap.close();
      await dev.close();
    }
  });

  it("a provider receives only a sealed body it alone can open", async () => {
    const p = await provider();
    const wire: Buffer[] = [];
    p.on("wire", (m) => wire.push(Buffer.from(toBinary(ConnectResponseSchema, m))));
    const prompt = `PROMPT${randomBytes(8).toString("hex")}`;
    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, chat(prompt));
    expect(res.status).toBe(200);
    // The seal is timed into X-Timing's encrypt phase.
    expect(JSON.parse(res.headers.get("x-timing") ?? "{}").encrypt).toBeGreaterThan(0);
    const request = p.received[0];
    expect(request?.sealed).toBe(true);
    expect(request?.body).toMatchObject({ messages: [{ content: prompt }] }); // opened with its key
    expect(wire.some((b) => b.includes(Buffer.from(prompt)))).toBe(false);
  });

  it("refuses a provider that registers without an encryption key", async () => {
    const p = new ScriptedProvider({ baseUrl: t.url, models: [{ id: "tiny" }], encryption: false });
    scripted.push(p);
    await expect(p.start()).rejects.toThrow(/encryption_public_key must be a 32-byte X25519 key/);
    expect(t.coordinator.registry.size).toBe(0);
  });

  for (const [name, misbehave, code] of [
    ["plaintext chunks", { plaintextChunks: true }, "chunk_not_sealed"],
    ["chunks sealed to another key", { sealChunksToAnotherKey: true }, "chunk_unopenable"],
  ] as const) {
    it(`${name}: the request fails over and the provider is de-routed (${code})`, async () => {
      // The bad provider is alone when the request arrives; an honest one joins while it "prefills".
      const bad = await provider({ misbehave, script: () => ({ tokens: ["bad "], firstTokenDelayMs: 400 }) });
      const badId = bad.providerId ?? "";
      const arrived = new Promise((resolve) => bad.once("request", resolve));
      const pending = postJson(t.url, "/v1/chat/completions", t.apiKey, chat("hello", { stream: true }));
      await arrived;
      const good = await provider({ script: () => ({ tokens: ["good ", "answer"] }) });
      const res = await pending;
      expect(res.status).toBe(200);
      const events = (await readSse(res)).events.map((e) => e.data);
      expect(events.filter((d) => d === "[DONE]")).toHaveLength(1);
      const text = events
        .filter((d) => d !== "[DONE]")
        .map((d) => JSON.parse(d).choices?.[0]?.delta?.content ?? "")
        .join("");
      expect(text).toBe("good answer");
      expect(good.received).toHaveLength(1);
      // De-routed: told why (not routable, with the code), cancelled, and evicted.
      await waitFor(() => bad.runtimeStatuses.some((s) => !s.routable), 5_000, "the untrusted status");
      const status = bad.runtimeStatuses.find((s) => !s.routable);
      expect(status?.reasons.map((r) => r.code)).toContain(code);
      expect(bad.cancelled).toContain(bad.received[0]?.requestId);
      await waitFor(() => t.coordinator.registry.get(badId) === undefined, 5_000, "the eviction");
      const again = await postJson(t.url, "/v1/chat/completions", t.apiKey, chat("again"));
      expect(again.status).toBe(200);
      expect(bad.received).toHaveLength(1);
    });
  }

  it("signs responses: the consumer gets a darkbloom object that verifies, and tampering fails", async () => {
    const { link, signer } = await daemonLink(t.url, { tokensPerGeneration: 5 });
    const requestBody = JSON.stringify(chat("Sign this, please", { n: 2, max_tokens: 5 }));
    const whole = await postJson(t.url, "/v1/chat/completions", t.apiKey, requestBody);
    expect(whole.status).toBe(200);
    const body = await readJson(whole);
    expect(body.darkbloom).toMatchObject({
      provider_id: link.providerId,
      trust_level: "self_signed",
      signing_key: Buffer.from(signer.publicKey()).toString("base64"),
    });
    // Pinned to the key the coordinator publishes for the provider id the proof names.
    const published = (await (await fetch(`${t.url}/v1/providers/attestation`)).json()) as {
      data: Array<{ provider_id: string; public_key: string | null }>;
    };
    const signingKey = published.data.find((p) => p.provider_id === link.providerId)?.public_key ?? "";
    expect(verifyResponse(body, { requestBody, signingKey })).toMatchObject({
      ok: true,
      pinned: true,
      proof: { version: 3, usage: { completion_tokens: body.usage.completion_tokens } },
    });
    const tampered = structuredClone(body);
    tampered.choices[1].message.content = tampered.choices[1].message.content.replace("tok1", "tok7");
    expect(verifyResponse(tampered, { requestBody })).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/response_sha256/),
    });
    expect(verifyResponse(body, { requestBody: requestBody.replace("please", "Please") }).ok).toBe(false);

    const streamBody = JSON.stringify(chat("Stream and sign", { stream: true }));
    const streamed = await postJson(t.url, "/v1/chat/completions", t.apiKey, streamBody);
    const transcript = await streamed.text();
    const events = parseSse(transcript).events.map((e) => e.data);
    expect(events.filter((d) => d === "[DONE]")).toHaveLength(1);
    const last = JSON.parse(events.at(-2) ?? "{}");
    expect(last.choices).toEqual([]);
    expect(last.darkbloom.signing_key).toBe(body.darkbloom.signing_key);
    expect(verifyResponse(transcript, { requestBody: streamBody, signingKey })).toMatchObject({
      ok: true,
      pinned: true,
    });
    expect(verifyResponse(transcript.replace("tok2", "tok9"), { requestBody: streamBody }).ok).toBe(false);
  });

  it("a forged response signature gets the provider flagged; the request is served elsewhere", async () => {
    const forger = SoftwareSigner.ephemeral();
    const { link } = await daemonLink(
      t.url,
      { tokensPerGeneration: 3, tokenIntervalMs: 150 },
      { response: forger },
    );
    const forgerId = link.providerId ?? "";
    const statuses: string[] = [];
    link.on("runtimeStatus", (s) => {
      if (!s.routable) statuses.push(...s.reasons.map((r) => r.code));
    });
    // Generation takes ~450 ms: an honest provider joins before the forged signature arrives.
    const pending = postJson(t.url, "/v1/chat/completions", t.apiKey, chat("hi"));
    await waitFor(() => link.inFlight === 1, 5_000, "the request to reach the forger");
    const honest = await provider({ script: () => ({ tokens: ["honest"] }) });
    const res = await pending;
    expect(res.status).toBe(200);
    const body = await readJson(res);
    expect(body.choices[0].message.content).toBe("honest");
    expect(body.darkbloom.provider_id).toBe(honest.providerId);
    await waitFor(() => statuses.includes("response_signature_invalid"), 5_000, "the untrusted status");
    await waitFor(() => t.coordinator.registry.get(forgerId) === undefined, 5_000, "the eviction");
  });

  for (const [forge, code] of [
    ["request_hash", "request_hash_mismatch"],
    ["response_hash", "response_hash_mismatch"],
    // What the consumer is shown besides the text: each must be what the provider signed.
    ["usage", "response_hash_mismatch"],
    ["finish_reason", "response_hash_mismatch"],
    ["model", "response_hash_mismatch"],
    ["provider_id", "response_hash_mismatch"],
    ["v1", "response_signature_outdated"],
  ] as const) {
    it(`a signature over the wrong ${forge.replace("_", " ")} is refused (${code}); streams end in an error`, async () => {
      const { privateKey } = await import("node:crypto").then((c) =>
        c.generateKeyPairSync("ec", { namedCurve: "P-256" }),
      );
      const bad = await provider({ responseSigningKey: privateKey, misbehave: { forgeSignature: forge } });
      const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, chat("hi", { stream: true }));
      expect(res.status).toBe(200); // the tokens were streamed before the signature came
      const events = (await readSse(res)).events.map((e) => e.data);
      expect(events.at(-1)).toBe("[DONE]");
      const error = JSON.parse(events.at(-2) ?? "{}");
      expect(error.error).toMatchObject({ code: "response_verification_failed" });
      expect(events.some((d) => d.includes('"darkbloom"'))).toBe(false);
      await waitFor(() => bad.runtimeStatuses.some((s) => !s.routable), 5_000, "the untrusted status");
      expect(bad.runtimeStatuses.flatMap((s) => s.reasons.map((r) => r.code))).toContain(code);
    });
  }

  it("a provider that invents a choice is cut: the consumer sees only the choice asked for, then an error", async () => {
    const p = await provider({ script: () => ({ tokens: ["a ", "b"], choices: 2 }) });
    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, chat("one", { stream: true }));
    const events = (await readSse(res)).events.map((e) => e.data);
    expect(events.at(-1)).toBe("[DONE]");
    const parsed = events.slice(0, -1).map((d) => JSON.parse(d));
    expect(parsed.at(-1).error.code).toBe("provider_metering_violation");
    const choices = parsed.flatMap((d) => d.choices ?? []);
    expect(choices.map((c: { index: number }) => c.index).every((i: number) => i === 0)).toBe(true);
    expect(verifyResponse(events.map((d) => `data: ${d}\n\n`).join(""))).toMatchObject({ ok: false });
    await expect
      .poll(() => p.runtimeStatuses.flatMap((s) => s.reasons.map((r) => r.code)))
      .toContain("choice_out_of_range");
  });

  it("a daemon with a signing key that does not sign version 3 is refused at registration", async () => {
    const { privateKey } = await import("node:crypto").then((c) =>
      c.generateKeyPairSync("ec", { namedCurve: "P-256" }),
    );
    await expect(provider({ responseSigningKey: privateKey, responseSignatureVersion: 0 })).rejects.toThrow(
      /requires response signatures version 3: update the daemon/,
    );
    // Without a signing key nothing is signed, whatever the version: such a provider still serves.
    await provider({ responseSignatureVersion: 0 });
    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, chat("hi"));
    expect(res.status).toBe(200);
    expect((await readJson(res)).darkbloom).toMatchObject({ version: 3, signature: null });
  });

  it("prompts and completions appear in no log line (trace level) and no database row", async () => {
    const db = await createTestDatabase(pg.url);
    const dataDir = await mkdtemp(join(tmpdir(), "darkbloom-privacy-"));
    const lines: string[] = [];
    const capture = { write: (line: string) => void lines.push(line) };
    const coordinator = await startCoordinator(
      {
        dataDir,
        adminKey: "privacy-admin-key-0123456789",
        databaseUrl: db.url,
        port: 0,
        heartbeatIntervalMs: 500,
        minTrustLevel: "none",
      },
      { logger: createLogger("trace", capture) },
    );
    try {
      await coordinator.catalog.upsert({
        id: "tiny",
        inputMicroUsdPerMillion: 150_000n,
        outputMicroUsdPerMillion: 600_000n,
      });
      const { secret } = await coordinator.accounts.createAccount({
        name: "privacy",
        initialCreditMicroUsd: 100_000_000n,
      });
      const completion = `COMPLETION${randomBytes(6).toString("hex")}`;
      await daemonLink(
        coordinator.url,
        { tokensPerGeneration: 4, token: (i) => `${completion}-${i} ` },
        {},
        pino({ level: "trace" }, capture),
      );
      const prompt = `PROMPT${randomBytes(8).toString("hex")}`;
      const requests = [
        ["/v1/chat/completions", chat(prompt)],
        ["/v1/chat/completions", chat(prompt, { stream: true, stream_options: { include_usage: true } })],
        ["/v1/completions", { model: "tiny", prompt, n: 2 }],
        ["/v1/chat/completions", chat(prompt, { max_tokens: 100_000 })], // refused: context too long
      ] as const;
      let served = 0;
      for (const [path, body] of requests) {
        const res = await postJson(coordinator.url, path, secret, body);
        const text = await res.text();
        if (res.status === 200) {
          served++;
          expect(text).toContain(completion);
        }
      }
      expect(served).toBe(3);
      expect(lines.length).toBeGreaterThan(10);
      const logs = lines.join("");
      expect(logs).not.toContain(prompt);
      expect(logs).not.toContain(completion);
      // Every row of every table, as text.
      const tables = await db.pool.query<{ name: string }>(
        "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) AS name " +
          "FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema') " +
          "AND table_type = 'BASE TABLE'",
      );
      expect(tables.rows.length).toBeGreaterThan(5);
      let rows = 0;
      for (const { name } of tables.rows) {
        const dump = await db.pool.query<{ row: string }>(`SELECT t::text AS row FROM ${name} t`);
        rows += dump.rows.length;
        for (const { row } of dump.rows) {
          expect(row, `a row of ${name}`).not.toContain(prompt);
          expect(row, `a row of ${name}`).not.toContain(completion);
        }
      }
      expect(rows).toBeGreaterThan(0);
    } finally {
      await Promise.all(links.splice(0).map((l) => l.close()));
      await coordinator.close({ drainMs: 0 });
      await db.drop();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
