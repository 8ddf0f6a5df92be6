import { createHash, type KeyObject, sign } from "node:crypto";
import type { ResponseSignatureInit } from "@darkbloom/protocol/provider-client";
import {
  EMBEDDINGS_SIGNATURE_VERSION,
  embeddingsSha256,
  embeddingsSignatureMessage,
  type SignedEmbeddings,
} from "@darkbloom/protocol/verifiable-embeddings";
import type { ForgedSignature } from "./response-signing.js";

/** How a scripted provider answers an embeddings request (Endpoint.EMBEDDINGS). */
export interface ScriptedEmbeddings {
  /** The vectors' length (default 8). */
  dimensions?: number;
  /** Each input's token_count (default: a quarter of its characters, rounded up, plus 2). */
  inputTokens?: (text: string, index: number) => number;
  /** usage.prompt_tokens (default: the inputs' token counts summed); a liar's other figure. */
  promptTokens?: number;
  /** A liar's vectors, sent as given (default: a unit vector derived from the input's text). */
  vector?: (text: string, index: number) => number[];
  /** A liar's number of embeddings (default: one per input). */
  count?: number;
}

/** The inputs of an embeddings body: `input` as a string or an array of strings. */
export function embeddingInputs(body: unknown): string[] {
  const input = typeof body === "object" && body !== null ? (body as { input?: unknown }).input : undefined;
  if (typeof input === "string") return [input];
  return Array.isArray(input) ? input.map(String) : [];
}

/** The answer's vectors and counts, in input order. */
export function scriptedEmbeddings(
  inputs: readonly string[],
  script: ScriptedEmbeddings = {},
): { vectors: Float32Array[]; tokens: number[]; promptTokens: number } {
  const dimensions = script.dimensions ?? 8;
  const count = script.count ?? inputs.length;
  const vectors: Float32Array[] = [];
  const tokens: number[] = [];
  for (let i = 0; i < count; i++) {
    const text = inputs[i] ?? "";
    vectors.push(Float32Array.from(script.vector?.(text, i) ?? unitVector(text, dimensions)));
    tokens.push(script.inputTokens?.(text, i) ?? Math.ceil(text.length / 4) + 2);
  }
  return { vectors, tokens, promptTokens: script.promptTokens ?? tokens.reduce((sum, t) => sum + t, 0) };
}

/** A deterministic unit vector of the text (what tests compare against). */
export function unitVector(text: string, dimensions: number): number[] {
  const digest = createHash("sha256").update(text).digest();
  const raw = Array.from({ length: dimensions }, (_, i) => (digest[i % digest.length] as number) - 127.5);
  const norm = Math.hypot(...raw);
  return raw.map((v) => Math.fround(v / norm));
}

/** InferenceComplete.signature over the embeddings as sent, forged as asked. */
export function signEmbeddings(
  key: KeyObject,
  forge: ForgedSignature | undefined,
  requestSha256: Uint8Array,
  response: SignedEmbeddings,
): ResponseSignatureInit {
  const signed: SignedEmbeddings = {
    providerId: forge === "provider_id" ? "prov_someone_else" : response.providerId,
    model: forge === "model" ? `${response.model}!` : response.model,
    embeddings:
      forge === "response_hash" ? response.embeddings.map((v) => v.map((x) => -x)) : response.embeddings,
    promptTokens: response.promptTokens + (forge === "usage" ? 1 : 0),
  };
  const responseHash = embeddingsSha256(signed);
  return {
    requestSha256,
    responseSha256: responseHash,
    signature: sign("sha256", embeddingsSignatureMessage(requestSha256, responseHash), key),
    version: EMBEDDINGS_SIGNATURE_VERSION,
  };
}
