import { generateKeyPairSync, sign } from "node:crypto";
import { describe, expect, it } from "vitest";
import { rawP256PublicKey } from "./p256.js";
import {
  hex,
  type ResponseProof,
  responseBytes,
  responseSha256,
  responseSignatureMessage,
  sha256,
  verifyResponse,
  verifyResponseSignature,
} from "./verifiable-response.js";

const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
const signingKey = rawP256PublicKey(privateKey);

function proofFor(requestBody: string, texts: string[], key = privateKey): ResponseProof {
  const requestHash = sha256(new TextEncoder().encode(requestBody));
  const responseHash = responseSha256(texts);
  const signature = sign("sha256", responseSignatureMessage(requestHash, responseHash), key);
  return {
    provider_id: "prov_test",
    trust_level: "self_signed",
    signing_key: Buffer.from(signingKey).toString("base64"),
    request_sha256: hex(requestHash),
    response_sha256: hex(responseHash),
    signature: signature.toString("base64"),
  };
}

const REQUEST = JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }], n: 2 });
const TEXTS = ["Hello, wörld! 👋", ""];

function chatBody(texts: string[], proof: ResponseProof) {
  return {
    id: "chatcmpl-1",
    object: "chat.completion",
    choices: texts.map((content, index) => ({
      index,
      message: { role: "assistant", content },
      finish_reason: "stop",
    })),
    darkbloom: proof,
  };
}

function sseTranscript(texts: string[], proof: ResponseProof): string {
  const events: string[] = [];
  for (const [index, text] of texts.entries()) {
    for (const piece of text.match(/.{1,3}/gsu) ?? []) {
      events.push(
        JSON.stringify({ object: "chat.completion.chunk", choices: [{ index, delta: { content: piece } }] }),
      );
    }
    events.push(JSON.stringify({ choices: [{ index, delta: {}, finish_reason: "stop" }] }));
  }
  events.push(JSON.stringify({ choices: [], darkbloom: proof }));
  return `${[...events, "[DONE]"].map((e) => `data: ${e}\n\n`).join(": keep-alive\n\n")}`;
}

describe("verifiable responses", () => {
  it("defines the response bytes as length-prefixed UTF-8 choices in index order", () => {
    expect(Buffer.from(responseBytes(["ab", "", "é"])).toString("hex")).toBe(
      "00000002616200000000" + "00000002c3a9",
    );
    // Unambiguous where a separator would not be: ["a\0b"] and ["a", "b"] differ.
    expect(hex(responseSha256(["a\u0000b"]))).not.toBe(hex(responseSha256(["a", "b"])));
    expect(hex(responseSha256(["ab", "", "é"]))).toBe(hex(sha256(responseBytes(["ab", "", "é"]))));
  });

  it("signs a domain-separated message of the two hashes", () => {
    const message = responseSignatureMessage(new Uint8Array(32).fill(1), new Uint8Array(32).fill(2));
    expect(Buffer.from(message.subarray(0, 22)).toString("latin1")).toBe("darkbloom-response-v1\u0000");
    expect(message).toHaveLength(86);
  });

  it("accepts a saved JSON body, its text, and an SSE transcript", () => {
    const proof = proofFor(REQUEST, TEXTS);
    for (const saved of [
      chatBody(TEXTS, proof),
      JSON.stringify(chatBody(TEXTS, proof)),
      sseTranscript(TEXTS, proof),
    ]) {
      const result = verifyResponse(saved, { requestBody: REQUEST });
      expect(result).toMatchObject({ ok: true, texts: TEXTS });
    }
    const completion = { choices: [{ index: 0, text: "once" }], darkbloom: proofFor("{}", ["once"]) };
    expect(verifyResponse(completion).ok).toBe(true);
  });

  it("fails on any changed character of the content, the request, or the signature", () => {
    const proof = proofFor(REQUEST, TEXTS);
    const text = TEXTS[0] as string;
    for (let i = 0; i < text.length; i++) {
      const changed = `${text.slice(0, i)}${text[i] === "x" ? "y" : "x"}${text.slice(i + 1)}`;
      const result = verifyResponse(chatBody([changed, ""], proof));
      expect(result.ok).toBe(false);
      if (!result.ok) expect(result.reason).toMatch(/response_sha256/);
    }
    expect(verifyResponse(chatBody([text, " "], proof)).ok).toBe(false);
    expect(verifyResponse(chatBody([text], proof)).ok).toBe(false); // a dropped choice
    const streamed = sseTranscript(TEXTS, proof).replace('"Hel"', '"Hal"');
    expect(verifyResponse(streamed).ok).toBe(false);
    const wrongRequest = verifyResponse(chatBody(TEXTS, proof), { requestBody: REQUEST.replace("hi", "ho") });
    expect(wrongRequest).toMatchObject({ ok: false, reason: expect.stringMatching(/request_sha256/) });
    const other = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
    const forged = { ...proof, signature: proofFor(REQUEST, TEXTS, other).signature };
    expect(verifyResponse(chatBody(TEXTS, forged))).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/signature/),
    });
    expect(
      verifyResponse(chatBody(TEXTS, proof), {
        signingKey: Buffer.from(rawP256PublicKey(other)).toString("base64"),
      }),
    ).toMatchObject({ ok: false });
  });

  it("explains unsigned, missing and malformed proofs", () => {
    const proof = proofFor(REQUEST, TEXTS);
    expect(verifyResponse(chatBody(TEXTS, { ...proof, signature: null, signing_key: null }))).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/not signed/),
    });
    expect(verifyResponse({ choices: [] })).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/no darkbloom/),
    });
    expect(verifyResponse("not json")).toMatchObject({ ok: false });
    expect(verifyResponse(`data: ${JSON.stringify({ choices: [] })}\n\n`)).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/\[DONE\]/),
    });
    expect(
      verifyResponseSignature(new Uint8Array(3), new Uint8Array(32), new Uint8Array(32), new Uint8Array(8)),
    ).toBe(false);
  });
});
