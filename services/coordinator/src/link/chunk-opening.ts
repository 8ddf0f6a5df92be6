import { decodeChunkPayload } from "@darkbloom/protocol";
import type { ChunkPayload, InferenceChunk } from "@darkbloom/protocol/provider/v1";
import { type BoxKey, wipe } from "@darkbloom/protocol/sealed-box";

/** Trust reason codes for a provider caught breaking end-to-end encryption. */
export const EncryptionViolation = {
  /** A plaintext chunk answered a sealed request. */
  chunkNotSealed: "chunk_not_sealed",
  /** A sealed chunk did not open with the request's key (sealed to another key, or tampered). */
  chunkUnopenable: "chunk_unopenable",
} as const;

/** A chunk's payload opened, or why it cannot be used. */
export type OpenedChunk =
  | { chunk: ChunkPayload }
  /** A trust matter: the provider broke end-to-end encryption. */
  | { untrusted: string; message: string }
  /** A protocol matter (e.g. a bug): the request fails over. */
  | { violation: string };

/**
 * Opens a chunk's payload with the request's box key (`key`; undefined for a plaintext dispatch).
 * Where the provider's stream is held and where the key is kept may be two replicas (forwarding),
 * so both open chunks with this one function.
 */
export function openChunk(key: BoxKey | undefined, payload: InferenceChunk["payload"]): OpenedChunk {
  if (key) {
    if (payload.case !== "sealed") {
      return {
        untrusted: EncryptionViolation.chunkNotSealed,
        message: "a plaintext chunk answered a sealed request",
      };
    }
    let plaintext: Uint8Array | undefined;
    try {
      plaintext = key.open(payload.value);
      return { chunk: decodeChunkPayload(plaintext) };
    } catch {
      return {
        untrusted: EncryptionViolation.chunkUnopenable,
        message: "a chunk did not open with the request's key (wrong key or tampered)",
      };
    } finally {
      wipe(plaintext);
    }
  }
  if (payload.case === "plaintext") return { chunk: payload.value };
  return { violation: `${payload.case ?? "empty"} chunk on a plaintext dispatch` };
}
