// The Connect routes read no message larger than the HTTP body limit: not a provider envelope whose
// header declares gigabytes, not a compressed unary request that inflates past it.
import http2 from "node:http2";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestCoordinator, type TestCoordinator } from "./testing/test-coordinator.js";
import { startTestPostgres, type TestPostgres } from "./testing/test-database.js";

const LIMIT = 64 * 1024;

let pg: TestPostgres;
let t: TestCoordinator;

beforeAll(async () => {
  pg = await startTestPostgres();
  t = await startTestCoordinator(pg.url, { bodyLimitBytes: LIMIT });
});

afterAll(async () => {
  await t?.close();
  await pg?.stop();
});

/** Opens a provider stream, writes `bytes` and leaves it open; resolves with the end-stream error. */
function providerStream(bytes: Uint8Array): Promise<{ code: string; message: string; ms: number }> {
  const started = performance.now();
  const session = http2.connect(t.url);
  session.on("error", () => undefined);
  const stream = session.request({
    ":method": "POST",
    ":path": "/darkbloom.provider.v1.ProviderService/Connect",
    "content-type": "application/connect+proto",
  });
  let data = Buffer.alloc(0);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the stream did not end")), 8_000);
    stream.on("data", (chunk: Buffer) => {
      data = Buffer.concat([data, chunk]);
    });
    stream.on("end", () => {
      clearTimeout(timer);
      session.destroy();
      // The Connect end-stream message: flags 0x02, length, JSON.
      const text = data.subarray(5).toString("utf8");
      const end = (text ? JSON.parse(text) : {}) as { error?: { code: string; message: string } };
      resolve({
        code: end.error?.code ?? "ok",
        message: end.error?.message ?? "",
        ms: performance.now() - started,
      });
    });
    stream.write(bytes);
  });
}

describe("Connect message size limit", () => {
  it("refuses a provider envelope that declares more than the limit at once, before Register", async () => {
    for (const declared of [LIMIT + 1, 2 ** 31, 2 ** 32 - 1]) {
      const header = Buffer.alloc(5);
      header.writeUInt32BE(declared, 1);
      const end = await providerStream(header);
      expect(end.code).toBe("resource_exhausted");
      // Without the limit the stream waited (with the buffer allocated) for the register deadline.
      expect(end.ms).toBeLessThan(2_000);
    }
  });

  it("refuses a compressed unary request that inflates past the limit", async () => {
    const bomb = gzipSync(Buffer.alloc(LIMIT * 64));
    expect(bomb.length).toBeLessThan(LIMIT);
    const res = await fetch(`${t.url}/darkbloom.inference.v1.InferenceService/ListModels`, {
      method: "POST",
      headers: { "content-type": "application/proto", "content-encoding": "gzip" },
      body: bomb,
    });
    expect(res.status).toBe(429);
    expect(((await res.json()) as { code: string }).code).toBe("resource_exhausted");
  });
});

describe("malformed binary unary requests", () => {
  const listModels = (body: Uint8Array, headers: Record<string, string> = {}) =>
    fetch(`${t.url}/darkbloom.inference.v1.InferenceService/ListModels`, {
      method: "POST",
      headers: { "content-type": "application/proto", authorization: `Bearer ${t.apiKey}`, ...headers },
      body,
    });

  it("answers bytes that are not the method's input message with 400 invalid_argument, not a 500", async () => {
    // A truncated varint, a field with an invalid wire type, random bytes; plain and gzip-compressed.
    const garbage = [
      Buffer.from([0x08, 0xff]),
      Buffer.from([0x0f, 0x01]),
      Buffer.from("\xff\xfe\xfd\xfc", "latin1"),
    ];
    for (const bytes of garbage) {
      for (const [body, headers] of [
        [bytes, {}],
        [gzipSync(bytes), { "content-encoding": "gzip" }],
      ] as const) {
        const res = await listModels(body, headers);
        expect(res.status).toBe(400);
        const error = (await res.json()) as { code: string; message: string };
        expect(error.code).toBe("invalid_argument");
        expect(error.message).toMatch(/^parse binary: /);
      }
    }
    // The admin service is guarded the same way, before its authentication.
    const admin = await fetch(`${t.url}/darkbloom.admin.v1.AdminService/VerifyLedger`, {
      method: "POST",
      headers: { "content-type": "application/proto" },
      body: Buffer.from([0x0a, 0x80]),
    });
    expect(admin.status).toBe(400);
  });

  it("still serves a well-formed binary request", async () => {
    const res = await listModels(new Uint8Array());
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/proto");
  });
});
