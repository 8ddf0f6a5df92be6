/**
 * What an embeddings request's answer is on the wire (Endpoint.EMBEDDINGS): one chunk per input as
 * soon as its vector is computed, in input order, carrying the vector (binary32 little-endian, sealed
 * with the request's key like a text chunk) and the input's tokens; then InferenceComplete with the
 * inputs' tokens summed as the prompt tokens, no completion tokens and no choices, signed over the
 * embeddings record (@darkbloom/protocol/verifiable-embeddings: the session's provider id, the
 * model, every vector exactly as sent, the prompt tokens).
 */
import { ChunkDraft } from "@darkbloom/protocol/provider-client";
import {
  EMBEDDINGS_SIGNATURE_VERSION,
  embeddingBytes,
  embeddingsSha256,
  embeddingsSignatureMessage,
} from "@darkbloom/protocol/verifiable-embeddings";
import type { EmbeddingEvent, EmbeddingResult } from "../engine/engine.js";
import type { ActiveRequest } from "./request-server.js";

/** The chunk of one input's embedding. */
export function embeddingChunk(active: ActiveRequest, event: EmbeddingEvent): ChunkDraft {
  return new ChunkDraft(active.requestId, active.nextSequence++, 0, "", event.tokens, active.key, {
    index: event.index,
    values: embeddingBytes(event.vector),
  });
}

/** What the completion of a finished embedding job says and signs. */
export interface EmbeddingsCompletion {
  /** usage.prompt_tokens: every input's tokens. */
  promptTokens: number;
  /** The signed record (called only when the daemon signs). */
  record: () => { responseSha256: Uint8Array; message: Uint8Array; version: number };
}

/**
 * The completion of an embedding job's result for `inputs` inputs. Throws when the result does not
 * hold one vector and one count per input (an engine's fault: the request fails instead).
 */
export function embeddingsCompletion(
  active: ActiveRequest,
  inputs: number,
  result: EmbeddingResult,
): EmbeddingsCompletion {
  const { embeddings, promptTokens: counts } = result;
  if (embeddings.length !== inputs || counts.length !== inputs) {
    throw new Error(
      `the engine returned ${embeddings.length} embeddings and ${counts.length} counts for ${inputs} inputs`,
    );
  }
  const promptTokens = counts.reduce((sum, n) => sum + n, 0);
  return {
    promptTokens,
    record: () => {
      const responseSha256 = embeddingsSha256({
        providerId: active.session.ack?.providerId ?? "",
        model: active.model,
        embeddings,
        promptTokens,
      });
      return {
        responseSha256,
        message: embeddingsSignatureMessage(active.requestSha256, responseSha256),
        version: EMBEDDINGS_SIGNATURE_VERSION,
      };
    },
  };
}
