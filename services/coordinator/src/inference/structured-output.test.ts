import { ModelFeature } from "@darkbloom/protocol/provider/v1";
import { readSse, ScriptedProvider } from "@darkbloom/testing";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  postJson,
  readJson,
  startTestCoordinator,
  type TestCoordinator,
  waitFor,
} from "../testing/test-coordinator.js";
import { startTestPostgres, type TestPostgres } from "../testing/test-database.js";
import { STRUCTURED_OUTPUT_INVALID } from "./structured-output.js";

// Structured outputs through the API: routed only to providers whose engine enforces the grammar, and
// a provider that claims to and does not is cut, as one whose counts its text does not bear out.

const SCHEMA = {
  type: "object",
  properties: { colour: { enum: ["red", "green"] }, n: { type: "integer" } },
  required: ["colour", "n"],
  additionalProperties: false,
};
const structured = (extra: Record<string, unknown> = {}) => ({
  model: "tiny",
  messages: [{ role: "user", content: "Pick a colour" }],
  response_format: { type: "json_schema", json_schema: { name: "pick", strict: true, schema: SCHEMA } },
  ...extra,
});
const VALID = ['{"colour": ', '"green", ', '"n": 3}'];
const INVALID = ['{"colour": ', '"blue", ', '"n": 3}'];

let pg: TestPostgres;
let t: TestCoordinator;
const providers: ScriptedProvider[] = [];
const provider = async (features: ModelFeature[], tokens: string[]) => {
  const p = new ScriptedProvider({
    baseUrl: t.url,
    models: [{ id: "tiny", contextLength: 4096, features }],
    script: () => ({ tokens }),
  });
  providers.push(p);
  await p.start();
  return p;
};
const reasonCodes = (p: ScriptedProvider) => p.runtimeStatuses.flatMap((s) => s.reasons.map((r) => r.code));

beforeAll(async () => {
  pg = await startTestPostgres();
  t = await startTestCoordinator(pg.url, { queueTimeoutMs: 500 });
});
afterEach(async () => {
  await Promise.all(providers.splice(0).map((p) => p.stop().catch(() => undefined)));
  await waitFor(() => t.coordinator.registry.size === 0, 5_000, "providers to leave");
});
afterAll(async () => {
  await t?.close();
  await pg?.stop();
});

describe("response_format through the coordinator", () => {
  it("routes structured requests only to providers that enforce grammars; plain ones anywhere", async () => {
    const plain = await provider([], VALID);
    const grammar = await provider([ModelFeature.GRAMMAR], VALID);
    const served = new Set<string | null>();
    for (let i = 0; i < 6; i++) {
      const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, structured());
      expect(res.status).toBe(200);
      const body = (await readJson(res)) as { choices: Array<{ message: { content: string } }> };
      expect(JSON.parse(body.choices[0]!.message.content)).toEqual({ colour: "green", n: 3 });
      served.add(res.headers.get("x-provider-id"));
    }
    expect([...served]).toEqual([grammar.providerId]);
    // A plain request needs no feature: with the grammar provider gone, the other serves it.
    await grammar.stop();
    await waitFor(() => t.coordinator.registry.size === 1, 5_000, "the grammar provider to leave");
    const res = await postJson(
      t.url,
      "/v1/chat/completions",
      t.apiKey,
      structured({ response_format: undefined }),
    );
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    expect(res.headers.get("x-provider-id")).toBe(plain.providerId);
  });

  it("waits for, then refuses, a structured request no connected provider can enforce", async () => {
    await provider([], VALID);
    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, structured());
    expect(res.status).toBe(503);
    // Not a busy fleet: the one provider of the model cannot enforce a grammar, and the 503 says so.
    expect(await readJson(res)).toMatchObject({
      error: {
        code: "model_not_available",
        message: expect.stringMatching(/1 connected provider enforces the grammar/),
      },
    });
  });

  it("refuses a bad schema before routing, naming the keyword", async () => {
    const bad = structured({
      response_format: {
        type: "json_schema",
        json_schema: { name: "pick", schema: { type: "string", pattern: "(?!x)" } },
      },
    });
    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, bad);
    expect(res.status).toBe(400);
    const body = (await readJson(res)) as { error: { param: string; type: string } };
    expect(body.error).toMatchObject({
      type: "invalid_request_error",
      param: "response_format.json_schema.schema.pattern",
    });
  });

  it("takes an incomplete output that ended 'stop' where the request has stop strings (one may have cut it)", async () => {
    const honest = await provider([ModelFeature.GRAMMAR], ['{"colour": ', '"green"']);
    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, structured({ stop: [","] }));
    expect(res.status).toBe(200);
    expect(await readJson(res)).toMatchObject({ choices: [{ message: { content: '{"colour": "green"' } }] });
    expect(reasonCodes(honest)).not.toContain(STRUCTURED_OUTPUT_INVALID);
  });

  it("cuts and untrusts a provider that claims grammars and returns output the schema refuses", async () => {
    const liar = await provider([ModelFeature.GRAMMAR], INVALID);
    const res = await postJson(t.url, "/v1/chat/completions", t.apiKey, structured());
    expect(res.status).toBe(502);
    expect(await readJson(res)).toMatchObject({ error: { type: "provider_error" } });
    await expect.poll(() => reasonCodes(liar)).toContain(STRUCTURED_OUTPUT_INVALID);

    // Streamed: the text went out before the end could be judged; the stream ends with an error.
    const honest = await provider([ModelFeature.GRAMMAR], INVALID.slice(0, 2).concat(['"n": "3"}']));
    const stream = await postJson(t.url, "/v1/chat/completions", t.apiKey, structured({ stream: true }));
    expect(stream.status).toBe(200);
    const data = (await readSse(stream)).events.map((e) => e.data);
    expect(data.at(-1)).toBe("[DONE]");
    expect(JSON.parse(data.at(-2) ?? "{}").error).toMatchObject({ code: "provider_output_invalid" });
    await expect.poll(() => reasonCodes(honest)).toContain(STRUCTURED_OUTPUT_INVALID);
  });
});
