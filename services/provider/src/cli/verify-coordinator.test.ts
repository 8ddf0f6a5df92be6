import { generateKeyPairSync, type KeyObject, sign } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  postJson,
  startTestCoordinator,
  startTestPostgres,
  type TestCoordinator,
  type TestPostgres,
} from "@darkbloom/coordinator/testing";
import { rawP256PublicKey } from "@darkbloom/protocol";
import {
  hex,
  responseSha256,
  responseSignatureMessage,
  textChoices,
} from "@darkbloom/protocol/verifiable-response";
import { ScriptedProvider } from "@darkbloom/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "./program.js";
import { testIo } from "./test-io.js";

// `darkbloom verify` on responses a real coordinator served (PostgreSQL, Connect streams, scripted
// providers that sign with their registered keys), and on forgeries made from them the way an
// attacker holding a saved response and a key of their own would make them.

// biome-ignore lint/suspicious/noExplicitAny: saved bodies are edited freely by the forgeries
type Body = any;

const ANSWER = ["Paris ", "is ", "the ", "capital."];
const REAL_KEY = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
const OTHER_KEY = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
const FORGER_KEY = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
const base64Key = (k: KeyObject) => Buffer.from(rawP256PublicKey(k)).toString("base64");

let pg: TestPostgres;
let t: TestCoordinator;
let real: ScriptedProvider;
let other: ScriptedProvider;
let dir: string;
const request = {
  json: JSON.stringify({ model: "tiny", messages: [{ role: "user", content: "capital?" }], n: 2 }),
  empty: JSON.stringify({ model: "tiny", messages: [{ role: "user", content: "say nothing" }], n: 2 }),
  stream: JSON.stringify({
    model: "tiny",
    messages: [{ role: "user", content: "capital?" }],
    stream: true,
    stream_options: { include_usage: true },
  }),
  completions: JSON.stringify({ model: "tiny", prompt: "The capital:", n: 2, stream: true }),
};
const saved = { json: {} as Body, empty: {} as Body, stream: "", completions: "" };

/** A response served by `provider`, as the consumer saved it. */
async function serve(
  body: string,
  provider: ScriptedProvider,
  path = "/v1/chat/completions",
): Promise<string> {
  const res = await postJson(t.url, path, t.apiKey, body, {
    headers: {
      "content-type": "application/json",
      authorization: `Bearer ${t.apiKey}`,
      "x-darkbloom-providers": provider.providerId ?? "",
    },
  });
  expect(res.status).toBe(200);
  return res.text();
}

beforeAll(async () => {
  pg = await startTestPostgres();
  t = await startTestCoordinator(pg.url);
  const script = (r: { body: unknown }) => ({
    tokens: JSON.stringify(r.body).includes("say nothing") ? [] : ANSWER,
  });
  real = new ScriptedProvider({
    baseUrl: t.url,
    models: [{ id: "tiny" }],
    responseSigningKey: REAL_KEY,
    script,
  });
  other = new ScriptedProvider({ baseUrl: t.url, models: [{ id: "tiny" }], responseSigningKey: OTHER_KEY });
  await Promise.all([real.start(), other.start()]);
  dir = await mkdtemp(join(tmpdir(), "darkbloom-verify-coordinator-"));
  saved.json = JSON.parse(await serve(request.json, real));
  saved.empty = JSON.parse(await serve(request.empty, real));
  saved.stream = await serve(request.stream, real);
  saved.completions = await serve(request.completions, real, "/v1/completions");
  for (const [name, body] of Object.entries(request)) await writeFile(join(dir, `${name}.request`), body);
});
afterAll(async () => {
  await Promise.all([real?.stop(), other?.stop()]);
  await t?.close();
  await pg?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

let files = 0;
async function verify(response: unknown, ...args: string[]) {
  const path = join(dir, `saved-${files++}`);
  await writeFile(path, typeof response === "string" ? response : JSON.stringify(response));
  const io = testIo();
  const code = await runCli(["verify", path, ...args], io.io);
  return { code, stdout: io.stdout(), stderr: io.stderr() };
}

function edit(body: Body, change: (copy: Body) => void): Body {
  const copy = structuredClone(body);
  change(copy);
  return copy;
}

describe("darkbloom verify against a real coordinator", () => {
  it("pins a genuine response to the key the coordinator publishes for its provider (exit 0)", async () => {
    expect(saved.json.darkbloom.signing_key).toBe(base64Key(REAL_KEY));
    for (const [response, req] of [
      [saved.json, "json"],
      [saved.stream, "stream"],
      [saved.completions, "completions"],
    ] as const) {
      const pinned = await verify(response, "--coordinator", t.url, "--request", join(dir, `${req}.request`));
      expect(pinned).toMatchObject({ code: 0, stderr: "" });
      expect(pinned.stdout).toMatch(new RegExp(`^valid: .*${real.providerId}.*request matches\\n$`));
      expect(pinned.stdout.split("\n")).toHaveLength(2);
    }
    expect((await verify(saved.json, "--signing-key", base64Key(REAL_KEY))).code).toBe(0);
  });

  it("says plainly, with exit 2, that a valid signature whose key is not pinned proves nothing", async () => {
    const unpinned = await verify(saved.json);
    expect(unpinned.code).toBe(2);
    expect(unpinned.stdout).toMatch(/^signature valid, key NOT pinned: /);
    expect(unpinned.stdout.split("\n")).toHaveLength(2);
  });

  const forgeries: Array<[string, () => Body]> = [
    [
      "a forged choice placed before the real one with the same index",
      () =>
        edit(saved.json, (b) =>
          b.choices.unshift({ ...b.choices[0], message: { role: "assistant", content: "Lyon." } }),
        ),
    ],
    [
      "an extra choice with index 0.5",
      () =>
        edit(saved.json, (b) =>
          b.choices.push({ ...b.choices[0], index: 0.5, message: { role: "assistant", content: "Lyon." } }),
        ),
    ],
    ["a missing index (an empty choice dropped)", () => edit(saved.empty, (b) => b.choices.shift())],
    ["a duplicate index", () => edit(saved.empty, (b) => b.choices.push({ ...b.choices[1], index: 1 }))],
    [
      "an edited refusal",
      () => edit(saved.json, (b) => Object.assign(b.choices[0].message, { refusal: "I cannot say." })),
    ],
    [
      "an edited usage",
      () =>
        edit(saved.json, (b) => {
          b.usage.completion_tokens += 100;
          b.usage.total_tokens += 100;
        }),
    ],
    [
      "an edited finish_reason",
      () => edit(saved.json, (b) => Object.assign(b.choices[1], { finish_reason: "length" })),
    ],
    ["an edited model", () => edit(saved.json, (b) => Object.assign(b, { model: "gpt-5" }))],
    [
      "another provider's id",
      () => edit(saved.json, (b) => Object.assign(b.darkbloom, { provider_id: other.providerId })),
    ],
  ];
  for (const [name, forge] of forgeries) {
    it(`refuses ${name} (exit 1), with or without pinning`, async () => {
      const forged = forge();
      const plain = await verify(forged);
      expect(plain.code, plain.stdout).toBe(1);
      expect(plain.stderr).toMatch(/^darkbloom: invalid: /);
      expect((await verify(forged, "--coordinator", t.url)).code).toBe(1);
    });
  }

  it("refuses a forged choice index and an edited usage in a saved stream (exit 1)", async () => {
    const event = (o: unknown) => `data: ${JSON.stringify(o)}\n\n`;
    const extra = event({ model: "tiny", choices: [{ index: 0.5, delta: { content: "Lyon." } }] });
    const withExtra = saved.stream.replace("data: ", `${extra}data: `);
    expect((await verify(withExtra)).code).toBe(1);
    const usage = saved.stream.replace(
      /"completion_tokens":(\d+)/,
      (_m, n) => `"completion_tokens":${Number(n) + 1}`,
    );
    expect(usage).not.toBe(saved.stream);
    expect((await verify(usage)).code).toBe(1);
  });

  it("a response fabricated and signed with the forger's own key: not pinned (2), or refused when pinned (1)", async () => {
    const fabricated = edit(saved.json, (b) => {
      for (const c of b.choices) c.message.content = "Lyon is the capital.";
    });
    fabricated.darkbloom = forgeProof(fabricated, FORGER_KEY);
    expect(fabricated.darkbloom.provider_id).toBe(real.providerId);
    const unpinned = await verify(fabricated);
    expect(unpinned.code).toBe(2);
    expect(unpinned.stdout).toMatch(/key NOT pinned/);
    const pinned = await verify(fabricated, "--coordinator", t.url);
    expect(pinned.code).toBe(1);
    expect(pinned.stderr).toMatch(/not the key the coordinator publishes for provider/);
    expect((await verify(fabricated, "--signing-key", base64Key(REAL_KEY))).code).toBe(1);
  });

  it("cannot pin a provider the coordinator does not publish, or an unreachable coordinator: exit 2", async () => {
    const stranger = edit(saved.json, (b) => Object.assign(b.darkbloom, { provider_id: "prov_gone" }));
    stranger.darkbloom = forgeProof(stranger, REAL_KEY);
    const unknown = await verify(stranger, "--coordinator", t.url);
    expect(unknown.code).toBe(2);
    expect(unknown.stdout).toMatch(/key NOT pinned: .*does not publish provider prov_gone/);
    const down = await verify(saved.json, "--coordinator", "http://127.0.0.1:9");
    expect(down.code).toBe(2);
    expect(down.stdout).toMatch(/key NOT pinned: cannot fetch/);
    expect((await verify(saved.json, "--coordinator", "not a url")).code).toBe(64);
    expect((await verify(saved.json, "--coordinator", t.url, "--signing-key", "BAAA")).code).toBe(64);
  });
});

/**
 * The proof a forger makes for an edited body: every signed field as the body shows it, the key of
 * their choice.
 */
function forgeProof(body: Body, key: KeyObject): Body {
  const requestHash = Buffer.from(body.darkbloom.request_sha256, "hex");
  const responseHash = responseSha256({
    providerId: body.darkbloom.provider_id,
    model: body.model,
    choices: textChoices(
      body.choices.map((c: Body) => c.message.content),
      body.choices.map((c: Body) => c.finish_reason),
    ),
    usage: { promptTokens: body.usage.prompt_tokens, completionTokens: body.usage.completion_tokens },
  });
  return {
    ...body.darkbloom,
    signing_key: base64Key(key),
    response_sha256: hex(responseHash),
    signature: sign("sha256", responseSignatureMessage(requestHash, responseHash), key).toString("base64"),
  };
}
