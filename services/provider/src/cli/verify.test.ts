import { generateKeyPairSync, sign } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { rawP256PublicKey } from "@darkbloom/protocol";
import {
  embeddingBytes,
  embeddingsSha256,
  embeddingsSignatureMessage,
} from "@darkbloom/protocol/verifiable-embeddings";
import {
  hex,
  RESPONSE_SIGNATURE_VERSION,
  responseSha256,
  responseSignatureMessage,
  sha256,
  textChoices,
} from "@darkbloom/protocol/verifiable-response";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "./program.js";
import { testIo } from "./test-io.js";

const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
const REQUEST = '{"model":"tiny","messages":[{"role":"user","content":"Say hi"}]}';
const TEXT = "Hi there, consumer.";
const KEY = Buffer.from(rawP256PublicKey(privateKey)).toString("base64");

function savedResponse(text: string) {
  const requestHash = sha256(Buffer.from(REQUEST));
  const responseHash = responseSha256({
    providerId: "prov_abc",
    model: "tiny",
    choices: textChoices([TEXT], ["stop"]),
    usage: { promptTokens: 5, completionTokens: 4 },
  });
  return {
    id: "chatcmpl-x",
    object: "chat.completion",
    model: "tiny",
    choices: [{ index: 0, message: { role: "assistant", content: text }, finish_reason: "stop" }],
    usage: { prompt_tokens: 5, completion_tokens: 4, total_tokens: 9 },
    darkbloom: {
      version: RESPONSE_SIGNATURE_VERSION,
      provider_id: "prov_abc",
      trust_level: "self_signed",
      signing_key: KEY,
      request_sha256: hex(requestHash),
      response_sha256: hex(responseHash),
      usage: { prompt_tokens: 5, completion_tokens: 4 },
      signature: sign("sha256", responseSignatureMessage(requestHash, responseHash), privateKey).toString(
        "base64",
      ),
    },
  };
}

const EMBED_REQUEST = '{"model":"tiny-embed","input":["a","b"]}';

/** A saved embeddings response, the second vector base64 as the openai SDKs ask for it. */
function savedEmbeddings(second: Float32Array) {
  const vectors = [Float32Array.of(0.6, 0.8), Float32Array.of(1, 0)];
  const requestHash = sha256(Buffer.from(EMBED_REQUEST));
  const responseHash = embeddingsSha256({
    providerId: "prov_abc",
    model: "tiny-embed",
    embeddings: vectors,
    promptTokens: 4,
  });
  return {
    object: "list",
    data: [
      { object: "embedding", index: 0, embedding: Array.from(vectors[0] as Float32Array) },
      { object: "embedding", index: 1, embedding: Buffer.from(embeddingBytes(second)).toString("base64") },
    ],
    model: "tiny-embed",
    usage: { prompt_tokens: 4, total_tokens: 4 },
    darkbloom: {
      version: 1,
      provider_id: "prov_abc",
      trust_level: "self_signed",
      signing_key: KEY,
      request_sha256: hex(requestHash),
      response_sha256: hex(responseHash),
      usage: { prompt_tokens: 4, completion_tokens: 0 },
      signature: sign("sha256", embeddingsSignatureMessage(requestHash, responseHash), privateKey).toString(
        "base64",
      ),
    },
  };
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "darkbloom-verify-"));
  await writeFile(join(dir, "embeddings.json"), JSON.stringify(savedEmbeddings(Float32Array.of(1, 0))));
  await writeFile(
    join(dir, "embeddings-tampered.json"),
    JSON.stringify(savedEmbeddings(Float32Array.of(0, 1))),
  );
  await writeFile(join(dir, "embed-request.json"), EMBED_REQUEST);
  await writeFile(join(dir, "valid.json"), JSON.stringify(savedResponse(TEXT), null, 2));
  await writeFile(
    join(dir, "tampered.json"),
    JSON.stringify(savedResponse(TEXT.replace("consumer", "Consumer"))),
  );
  await writeFile(join(dir, "request.json"), REQUEST);
  await writeFile(join(dir, "other-request.json"), REQUEST.replace("Say hi", "Say ho"));
  const proof = savedResponse(TEXT).darkbloom;
  const sse = [
    { model: "tiny", choices: [{ index: 0, delta: { role: "assistant", content: "Hi there, " } }] },
    { model: "tiny", choices: [{ index: 0, delta: { content: "consumer." } }] },
    { model: "tiny", choices: [{ index: 0, delta: {}, finish_reason: "stop" }] },
    { model: "tiny", choices: [], darkbloom: proof },
  ]
    .map((e) => `data: ${JSON.stringify(e)}\n\n`)
    .join("");
  await writeFile(join(dir, "stream.sse"), `${sse}data: [DONE]\n\n`);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function verify(...args: string[]) {
  const t = testIo();
  const code = await runCli(["verify", ...args], t.io);
  return { code, stdout: t.stdout(), stderr: t.stderr() };
}

describe("darkbloom verify", () => {
  it("exits 0 for a valid response signed with the given key, with and without the request", async () => {
    const plain = await verify(join(dir, "valid.json"), "--signing-key", KEY);
    expect(plain).toMatchObject({ code: 0, stderr: "" });
    expect(plain.stdout).toBe(
      "valid: provider prov_abc signed it with the given key; request not checked: pass --request\n",
    );
    const withRequest = await verify(
      join(dir, "valid.json"),
      "--request",
      join(dir, "request.json"),
      "--signing-key",
      KEY,
    );
    expect(withRequest).toMatchObject({ code: 0, stderr: "" });
    expect(withRequest.stdout).toMatch(/request matches\n$/);
    const stream = await verify(
      join(dir, "stream.sse"),
      "--request",
      join(dir, "request.json"),
      "--signing-key",
      KEY,
    );
    expect(stream.code).toBe(0);
  });

  it("exits 2 with one line when the signature is valid but its key is not pinned", async () => {
    const unpinned = await verify(join(dir, "valid.json"), "--request", join(dir, "request.json"));
    expect(unpinned).toMatchObject({ code: 2, stderr: "" });
    expect(unpinned.stdout).toMatch(
      /^signature valid, key NOT pinned: neither --coordinator nor --signing-key/,
    );
    expect(unpinned.stdout.trimEnd().split("\n")).toHaveLength(1);
  });

  it("exits 1 with one line when the content or the request was changed", async () => {
    const tampered = await verify(join(dir, "tampered.json"));
    expect(tampered.code).toBe(1);
    expect(tampered.stderr).toMatch(/^darkbloom: invalid: response_sha256 does not match the response/);
    expect(tampered.stderr.trimEnd().split("\n")).toHaveLength(1);
    expect(tampered.stdout).toBe("");
    const otherRequest = await verify(join(dir, "valid.json"), "--request", join(dir, "other-request.json"));
    expect(otherRequest.code).toBe(1);
    expect(otherRequest.stderr).toMatch(/invalid: request_sha256 does not match/);
    const wrongKey = await verify(join(dir, "valid.json"), "--signing-key", "BAAA");
    expect(wrongKey).toMatchObject({
      code: 1,
      stderr: "darkbloom: invalid: the response is signed with another key than the pinned one\n",
    });
  });

  it("checks an embeddings response against the embeddings record", async () => {
    const valid = await verify(
      join(dir, "embeddings.json"),
      "--request",
      join(dir, "embed-request.json"),
      "--signing-key",
      KEY,
    );
    expect(valid).toMatchObject({ code: 0, stderr: "" });
    expect(valid.stdout).toMatch(/^valid: provider prov_abc signed it with the given key; request matches/);
    const tampered = await verify(join(dir, "embeddings-tampered.json"), "--signing-key", KEY);
    expect(tampered.code).toBe(1);
    expect(tampered.stderr).toMatch(/invalid: response_sha256 does not match the response \(its embeddings/);
  });

  it("exits 64 on bad usage", async () => {
    expect((await verify()).code).toBe(64);
    expect((await verify(join(dir, "missing.json"))).code).toBe(64);
    expect((await verify(join(dir, "valid.json"), "--request", join(dir, "missing.json"))).code).toBe(64);
    expect((await verify(join(dir, "valid.json"), "--coordinator", "ftp://x")).code).toBe(64);
  });
});
