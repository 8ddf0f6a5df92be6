/**
 * An embeddings request body (POST /v1/embeddings), read by the one function the coordinator and the
 * provider both use: what one side embeds, bills or refuses, the other reads the same way.
 */
import { BodyError } from "../chat/body-error.js";
import type { EmbeddingInput } from "../chat/generation-input.js";

/** OpenAI's limit on the inputs of one request. */
export const MAX_EMBEDDING_INPUTS = 2048;

/**
 * The most tokens an embedding input is served with (OpenAI's limit per input): an embedding model's
 * context is made this large at most, whatever it was trained for, since the context's memory grows
 * with it (Qwen3-Embedding-0.6B: ~1.5 GiB at 8,192 tokens, ~2.4 GiB at 16,384) and its batch must
 * hold a whole input.
 */
export const MAX_EMBEDDING_INPUT_TOKENS = 8192;

/** How the vectors are shown: JSON numbers, or base64 of their binary32 bytes (little-endian). */
export type EmbeddingEncoding = "float" | "base64";

export interface EmbeddingsRequest {
  /** One input per text, in order; each is embedded on its own. */
  inputs: EmbeddingInput[];
  encodingFormat: EmbeddingEncoding;
  /** The vector length asked for (`dimensions`); absent: the model's own. */
  dimensions?: number;
}

type Json = Record<string, unknown>;

/**
 * `input` (a string, or 1..2048 non-empty strings), `encoding_format` (default float), `dimensions`
 * (a positive integer) and `user` (a string, not used). Token-id inputs (arrays of integers) are
 * refused: ids of another tokenizer (what tiktoken-based clients send) would be embedded as
 * meaningless tokens of this model's vocabulary. Throws BodyError naming the field.
 */
export function readEmbeddingsRequest(body: Json): EmbeddingsRequest {
  const request: EmbeddingsRequest = {
    inputs: readInputs(body.input),
    encodingFormat: readEncoding(body.encoding_format),
  };
  const { dimensions, user } = body;
  if (dimensions !== undefined && dimensions !== null) {
    if (typeof dimensions !== "number" || !Number.isInteger(dimensions) || dimensions < 1) {
      throw new BodyError("'dimensions' must be a positive integer.", "dimensions");
    }
    request.dimensions = dimensions;
  }
  if (user !== undefined && user !== null && typeof user !== "string") {
    throw new BodyError("'user' must be a string.", "user");
  }
  return request;
}

function readInputs(value: unknown): EmbeddingInput[] {
  if (typeof value === "string") return [input(value, "input")];
  if (!Array.isArray(value)) {
    throw new BodyError("'input' must be a string or an array of strings.", "input");
  }
  if (value.length === 0) throw new BodyError("'input' must not be empty.", "input");
  if (value.length > MAX_EMBEDDING_INPUTS) {
    throw new BodyError(
      `'input' holds ${value.length} inputs; at most ${MAX_EMBEDDING_INPUTS} are allowed.`,
      "input",
    );
  }
  if (value.every((v) => typeof v === "number") || value.every((v) => Array.isArray(v))) {
    throw new BodyError(
      "'input' as token ids is not supported: send the text (ids of another tokenizer would be embedded as this model's tokens).",
      "input",
    );
  }
  return value.map((v, i) => {
    if (typeof v !== "string") throw new BodyError(`'input[${i}]' must be a string.`, `input[${i}]`);
    return input(v, `input[${i}]`);
  });
}

function input(text: string, param: string): EmbeddingInput {
  if (text === "") throw new BodyError(`'${param}' must not be empty.`, param);
  return { kind: "embedding", text };
}

function readEncoding(value: unknown): EmbeddingEncoding {
  if (value === undefined || value === null || value === "float") return "float";
  if (value === "base64") return "base64";
  throw new BodyError("'encoding_format' must be 'float' or 'base64'.", "encoding_format");
}
