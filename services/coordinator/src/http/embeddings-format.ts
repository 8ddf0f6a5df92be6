import type { EmbeddingEncoding } from "@darkbloom/models/embeddings";
import { embeddingBytes } from "@darkbloom/protocol/verifiable-embeddings";
import type { EmbeddingsResult } from "../inference/embeddings.js";

/**
 * OpenAI's embeddings response, with the `darkbloom` proof: each vector as JSON numbers (every
 * binary32 value written as the shortest decimal that reads back as it) or as base64 of its
 * little-endian bytes, which is what OpenAI's SDKs ask for by default and decode themselves.
 */
export function embeddingsBody(model: string, result: EmbeddingsResult, encoding: EmbeddingEncoding): object {
  return {
    object: "list",
    data: result.embeddings.map((vector, index) => ({
      object: "embedding",
      index,
      embedding:
        encoding === "base64" ? Buffer.from(embeddingBytes(vector)).toString("base64") : Array.from(vector),
    })),
    model,
    usage: { prompt_tokens: result.promptTokens, total_tokens: result.promptTokens },
    darkbloom: result.proof,
  };
}
