import { generateKeyPairSync, sign } from "node:crypto";
import { describe, expect, it } from "vitest";
import { rawP256PublicKey } from "./p256.js";
import {
  EMBEDDINGS_SIGNATURE_DOMAIN,
  embeddingBytes,
  embeddingFromBytes,
  embeddingsSha256,
  embeddingsSignatureMessage,
  verifyEmbeddingsResponse,
  verifyEmbeddingsSignature,
} from "./verifiable-embeddings.js";
import { hex, responseSignatureMessage, sha256 } from "./verifiable-response.js";

const { privateKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
const publicKey = rawP256PublicKey(privateKey);
const vectors = [Float32Array.from([0.6, -0.8]), Float32Array.from([1, 0])];
const requestBody = JSON.stringify({ model: "m", input: ["a", "b"] });

/** A saved response as the coordinator writes it, signed over `vectors`. */
function saved(encoding: "float" | "base64") {
  const requestSha256 = sha256(new TextEncoder().encode(requestBody));
  const responseSha256 = embeddingsSha256({
    providerId: "prov_1",
    model: "m",
    embeddings: vectors,
    promptTokens: 4,
  });
  const signature = sign("sha256", embeddingsSignatureMessage(requestSha256, responseSha256), privateKey);
  return {
    object: "list",
    data: vectors.map((v, index) => ({
      object: "embedding",
      index,
      embedding: encoding === "float" ? Array.from(v) : Buffer.from(embeddingBytes(v)).toString("base64"),
    })),
    model: "m",
    usage: { prompt_tokens: 4, total_tokens: 4 },
    darkbloom: {
      version: 1,
      provider_id: "prov_1",
      trust_level: "self_signed",
      signing_key: Buffer.from(publicKey).toString("base64"),
      request_sha256: hex(requestSha256),
      response_sha256: hex(responseSha256),
      usage: { prompt_tokens: 4, completion_tokens: 0 },
      signature: signature.toString("base64"),
    },
  };
}

describe("verifiable embeddings", () => {
  it("hashes the record of the module comment, byte for byte", () => {
    // provider "p", model "m", one embedding [1.0] (0x3f800000), 2 prompt tokens.
    const record = Buffer.from(
      "00000001" + "70" + "00000001" + "6d" + "00000001" + "00000000" + "00000001" + "3f800000" + "00000002",
      "hex",
    );
    expect(
      hex(
        embeddingsSha256({ providerId: "p", model: "m", embeddings: [Float32Array.of(1)], promptTokens: 2 }),
      ),
    ).toBe(hex(sha256(record)));
    const message = embeddingsSignatureMessage(new Uint8Array(32), new Uint8Array(32).fill(1));
    expect(Buffer.from(message.subarray(0, 24)).toString("latin1")).toBe(`${EMBEDDINGS_SIGNATURE_DOMAIN}\0`);
    expect(message.byteLength).toBe(88);
  });

  it("round-trips vectors through their little-endian wire form", () => {
    const v = Float32Array.from([0.1, -2.5, 3e-39, 65504]);
    expect(embeddingFromBytes(embeddingBytes(v))).toEqual(v);
    expect(Buffer.from(embeddingBytes(Float32Array.of(1))).toString("hex")).toBe("0000803f");
    expect(() => embeddingFromBytes(new Uint8Array(3))).toThrow(/binary32/);
  });

  it("verifies a saved response in either encoding, and pins its key", () => {
    const key = Buffer.from(publicKey).toString("base64");
    for (const encoding of ["float", "base64"] as const) {
      expect(
        verifyEmbeddingsResponse(JSON.stringify(saved(encoding)), { requestBody, signingKey: key }),
      ).toMatchObject({
        ok: true,
        pinned: true,
      });
    }
  });

  it("refuses every change of what was signed, and a completions signature", () => {
    const changed: Array<[string, (r: ReturnType<typeof saved>) => void, RegExp]> = [
      ["a value", (r) => ((r.data[0]?.embedding as number[])[0] = 0.5), /response_sha256/],
      ["the order", (r) => r.data.reverse(), /index/],
      ["the model", (r) => (r.model = "n"), /response_sha256/],
      ["the usage", (r) => (r.usage.prompt_tokens = 5), /usage/],
      ["a number no binary32 is", (r) => ((r.data[0]?.embedding as number[])[0] = 0.1), /binary32/],
      ["the version", (r) => (r.darkbloom.version = 2), /version/],
    ];
    for (const [what, change, reason] of changed) {
      const r = saved("float");
      change(r);
      const verdict = verifyEmbeddingsResponse(r);
      expect(verdict.ok, what).toBe(false);
      expect(verdict.ok ? "" : verdict.reason, what).toMatch(reason);
    }
    expect(verifyEmbeddingsResponse(saved("float"), { requestBody: "{}" })).toMatchObject({ ok: false });
    expect(
      verifyEmbeddingsResponse(saved("float"), { signingKey: Buffer.alloc(65, 4).toString("base64") }),
    ).toMatchObject({ ok: false });
    // The same hashes signed under the completions' domain do not verify as embeddings.
    const r = saved("float");
    const hashes = [
      Buffer.from(r.darkbloom.request_sha256, "hex"),
      Buffer.from(r.darkbloom.response_sha256, "hex"),
    ] as const;
    const other = sign("sha256", responseSignatureMessage(...hashes), privateKey);
    expect(verifyEmbeddingsSignature(publicKey, ...hashes, other)).toBe(false);
  });
});
