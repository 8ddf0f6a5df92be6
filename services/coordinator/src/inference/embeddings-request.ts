import type { EmbeddingInput } from "@darkbloom/models";
import { type EmbeddingEncoding, readEmbeddingsRequest } from "@darkbloom/models/embeddings";
import { parseBodyObject, read, readModel } from "./request-validation.js";
import { estimateTokens, utf8Bytes } from "./token-estimate.js";

/** An embeddings request after validation: what routing, billing and the checks need. */
export interface ValidatedEmbeddings {
  model: string;
  /** The inputs as the provider reads them (the reader both share), in order. */
  inputs: EmbeddingInput[];
  encodingFormat: EmbeddingEncoding;
  /** `dimensions` as sent; undefined: the model's own length. */
  dimensions: number | undefined;
  /** Estimated input tokens (routing, the context gate). */
  promptTokens: number;
  /**
   * Each input's most tokens: a byte-level or byte-fallback tokenizer makes at most a token of a byte,
   * and an embedding input gains at most a start and an end token. The reservation holds their sum,
   * and a provider's count above an input's bound is not the truth.
   */
  inputTokenBounds: number[];
  /** The request JSON exactly as the consumer sent it; forwarded to the provider unchanged. */
  body: Uint8Array;
}

/** Tokens an embedding input gains around its text (llama.cpp's start and end tokens). */
const INPUT_BOUNDS_TOKENS = 2;

/**
 * Parses and validates a POST /v1/embeddings body (`model`, `input`, `encoding_format`,
 * `dimensions`, `user`; unknown fields are tolerated as on the other routes).
 */
export function validateEmbeddingsRequest(body: Uint8Array): ValidatedEmbeddings {
  const o = parseBodyObject(body);
  const model = readModel(o);
  const request = read(() => readEmbeddingsRequest(o));
  return {
    model,
    inputs: request.inputs,
    encodingFormat: request.encodingFormat,
    dimensions: request.dimensions,
    promptTokens: request.inputs.reduce((sum, i) => sum + estimateTokens(i.text) + INPUT_BOUNDS_TOKENS, 0),
    inputTokenBounds: request.inputs.map((i) => utf8Bytes(i.text) + INPUT_BOUNDS_TOKENS),
    body,
  };
}
