// The coordinator cuts providers whose token counts their text does not bear out. These bounds must
// never trip on an honest engine: the real llama.cpp engine on synthesized models (random weights
// sample control tokens, split characters and stop sequences at random) serves a spread of requests,
// and every one of them completes, with the usage it was charged, and the provider stays routable.
import { readSse } from "@darkbloom/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestbed, type Testbed, type TestbedAccount } from "../testbed/index.js";

let testbed: Testbed;
let alice: TestbedAccount;

beforeAll(async () => {
  testbed = await startTestbed({ providers: [{ models: ["tiny", "tiny-llama"], maxBatch: 4 }] });
  alice = await testbed.createAccount(100_000_000n);
}, 180_000);

afterAll(async () => {
  await testbed?.stop();
}, 60_000);

/** A deterministic spread of requests: both models, n up to 3, stop strings, sampling settings. */
function requests(): Record<string, unknown>[] {
  const stops = [undefined, "e", [" ", "\n"], ["th", "a", "."], "ing"];
  const out: Record<string, unknown>[] = [];
  for (let i = 0; i < 24; i++) {
    out.push({
      model: i % 3 === 0 ? "tiny-llama" : "tiny",
      messages: [{ role: "user", content: `Request ${i}: écris une histoire 🙂 über ${"x".repeat(i)}` }],
      max_tokens: 40 + 25 * (i % 5),
      n: 1 + (i % 3),
      temperature: [0, 0.8, 1.5, 2][i % 4],
      seed: i,
      stream: i % 2 === 0,
      ...(stops[i % stops.length] !== undefined ? { stop: stops[i % stops.length] } : {}),
      ...(i % 2 === 0 ? { stream_options: { include_usage: true } } : {}),
    });
  }
  return out;
}

describe("metering an honest engine", () => {
  it("accepts every count the real engine reports, whatever it samples", async () => {
    const shown: { prompt_tokens: number; completion_tokens: number }[] = [];
    await Promise.all(
      requests().map(async (body) => {
        const res = await testbed.chat(alice.apiKey, body);
        expect(res.status).toBe(200);
        if (body.stream) {
          const events = (await readSse(res)).events.filter((e) => e.data !== "[DONE]");
          const parsed = events.map((e) => JSON.parse(e.data));
          expect(parsed.filter((p) => p.error)).toEqual([]);
          const usage = parsed.find((p) => p.usage)?.usage;
          expect(usage).toBeDefined();
          shown.push(usage);
        } else {
          const json = (await res.json()) as {
            error?: unknown;
            usage: { prompt_tokens: number; completion_tokens: number };
          };
          expect(json.error).toBeUndefined();
          shown.push(json.usage);
        }
      }),
    );
    for (const u of shown) expect(u.completion_tokens).toBeGreaterThan(0);
    const routable = await testbed.routable();
    expect(routable).toHaveLength(1);
    await testbed.settled();
    expect((await testbed.verifyLedger()).ok).toBe(true);
  });
});
