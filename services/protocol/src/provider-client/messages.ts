/**
 * Builders for every message a provider sends on ProviderService.Connect: the daemon and the
 * scripted provider of @darkbloom/testing both use them, so the two cannot drift apart on the wire.
 * The per-request ones (accepted, chunks, errors) are object literals rather than create() calls:
 * protobuf-es messages are plain objects, and a busy provider sends one per token.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  encodeChunkPayload,
  encodeEmbeddingChunkPayload,
  encodeLogprobsChunkPayload,
} from "../chunk-payload.js";
import {
  type AttestationResponseSchema,
  type ConnectRequest,
  ConnectRequestSchema,
  type HeartbeatSchema,
  type InferenceChunk,
  type LoadModelState,
  type RegisterSchema,
  type ResponseSignatureSchema,
  type TokenLogprob,
} from "../gen/darkbloom/provider/v1/provider_pb.js";
import type { SignedLogprob } from "../logprobs.js";
import { type BoxKey, wipe } from "../sealed-box.js";

/** The fields of an InferenceError other than request_id: how a provider refuses or fails a request. */
export interface InferenceFailure {
  httpStatus: number;
  code: string;
  message: string;
  retryable: boolean;
}

/** How one choice of a completed request ended (InferenceComplete.choices). */
export interface ChoiceOutcome {
  index: number;
  finishReason: string;
}

export type ResponseSignatureInit = MessageInitShape<typeof ResponseSignatureSchema>;

export type RegisterInit = MessageInitShape<typeof RegisterSchema>;

export type HeartbeatInit = MessageInitShape<typeof HeartbeatSchema>;

export function registerMessage(register: RegisterInit): ConnectRequest {
  return create(ConnectRequestSchema, { message: { case: "register", value: register } });
}

export function heartbeatMessage(heartbeat: HeartbeatInit): ConnectRequest {
  return create(ConnectRequestSchema, { message: { case: "heartbeat", value: heartbeat } });
}

export function acceptedMessage(requestId: string): ConnectRequest {
  return {
    $typeName: "darkbloom.provider.v1.ConnectRequest",
    message: {
      case: "inferenceAccepted",
      value: { $typeName: "darkbloom.provider.v1.InferenceAccepted", requestId },
    },
  };
}

/** A chunk in the clear: only for coordinators that allow unencrypted providers (development). */
export function chunkMessage(
  requestId: string,
  sequence: bigint,
  text: string,
  tokenCount: number,
  choiceIndex: number,
): ConnectRequest {
  return chunkEnvelope(requestId, sequence, {
    case: "plaintext",
    value: { $typeName: "darkbloom.provider.v1.ChunkPayload", text, tokenCount, choiceIndex, logprobs: [] },
  });
}

const EMPTY = new Uint8Array();

/**
 * A chunk whose serialized ChunkPayload is sealed with the request's box key (fresh nonce per
 * chunk). sender_public_key stays empty: the coordinator knows the provider's key. The plaintext
 * encoding is wiped once sealed.
 */
export function sealedChunkMessage(
  requestId: string,
  sequence: bigint,
  key: BoxKey,
  text: string,
  tokenCount: number,
  choiceIndex: number,
): ConnectRequest {
  const plaintext = encodeChunkPayload(text, tokenCount, choiceIndex);
  const { nonce, ciphertext } = key.seal(plaintext);
  wipe(plaintext);
  return chunkEnvelope(requestId, sequence, {
    case: "sealed",
    value: { $typeName: "darkbloom.provider.v1.SealedBox", senderPublicKey: EMPTY, nonce, ciphertext },
  });
}

/**
 * A chunk of text with its tokens' log-probabilities (a request that asked for them), sealed with
 * the request's key when there is one.
 */
export function logprobsChunkMessage(
  requestId: string,
  sequence: bigint,
  key: BoxKey | undefined,
  text: string,
  tokenCount: number,
  choiceIndex: number,
  entries: readonly SignedLogprob[],
): ConnectRequest {
  const logprobs: TokenLogprob[] = entries.map((e) => ({
    $typeName: "darkbloom.provider.v1.TokenLogprob",
    token: e.token,
    logprob: e.logprob,
    top: e.top.map((t) => ({
      $typeName: "darkbloom.provider.v1.TopLogprob",
      token: t.token,
      logprob: t.logprob,
    })),
  }));
  if (!key) {
    return chunkEnvelope(requestId, sequence, {
      case: "plaintext",
      value: { $typeName: "darkbloom.provider.v1.ChunkPayload", text, tokenCount, choiceIndex, logprobs },
    });
  }
  const plaintext = encodeLogprobsChunkPayload(text, tokenCount, choiceIndex, logprobs);
  const { nonce, ciphertext } = key.seal(plaintext);
  wipe(plaintext);
  return chunkEnvelope(requestId, sequence, {
    case: "sealed",
    value: { $typeName: "darkbloom.provider.v1.SealedBox", senderPublicKey: EMPTY, nonce, ciphertext },
  });
}

/**
 * The chunk of one input's embedding (ENDPOINT_EMBEDDINGS): its index, its binary32 values
 * (little-endian) and the input's tokens, sealed with the request's key when there is one.
 */
export function embeddingChunkMessage(
  requestId: string,
  sequence: bigint,
  key: BoxKey | undefined,
  index: number,
  values: Uint8Array,
  tokenCount: number,
): ConnectRequest {
  if (!key) {
    return chunkEnvelope(requestId, sequence, {
      case: "plaintext",
      value: {
        $typeName: "darkbloom.provider.v1.ChunkPayload",
        text: "",
        tokenCount,
        choiceIndex: 0,
        embedding: { $typeName: "darkbloom.provider.v1.Embedding", index, values },
        logprobs: [],
      },
    });
  }
  const plaintext = encodeEmbeddingChunkPayload(index, values, tokenCount);
  const { nonce, ciphertext } = key.seal(plaintext);
  wipe(plaintext);
  return chunkEnvelope(requestId, sequence, {
    case: "sealed",
    value: { $typeName: "darkbloom.provider.v1.SealedBox", senderPublicKey: EMPTY, nonce, ciphertext },
  });
}

function chunkEnvelope(
  requestId: string,
  sequence: bigint,
  payload: InferenceChunk["payload"],
): ConnectRequest {
  return {
    $typeName: "darkbloom.provider.v1.ConnectRequest",
    message: {
      case: "inferenceChunk",
      value: { $typeName: "darkbloom.provider.v1.InferenceChunk", requestId, sequence, payload },
    },
  };
}

export function completeMessage(
  requestId: string,
  promptTokens: number,
  completionTokens: number,
  choices: ChoiceOutcome[],
  signature?: ResponseSignatureInit,
): ConnectRequest {
  return create(ConnectRequestSchema, {
    message: {
      case: "inferenceComplete",
      value: { requestId, usage: { promptTokens, completionTokens }, choices, signature },
    },
  });
}

export function errorMessage(requestId: string, failure: InferenceFailure): ConnectRequest {
  return {
    $typeName: "darkbloom.provider.v1.ConnectRequest",
    message: {
      case: "inferenceError",
      value: {
        $typeName: "darkbloom.provider.v1.InferenceError",
        requestId,
        httpStatus: failure.httpStatus,
        code: failure.code,
        message: failure.message,
        retryable: failure.retryable,
      },
    },
  };
}

export function loadStatusMessage(
  operationId: string,
  modelId: string,
  state: LoadModelState,
  reason = "",
): ConnectRequest {
  return create(ConnectRequestSchema, {
    message: { case: "loadModelStatus", value: { operationId, modelId, state, reason } },
  });
}

export function attestationResponseMessage(
  response: MessageInitShape<typeof AttestationResponseSchema>,
): ConnectRequest {
  return create(ConnectRequestSchema, { message: { case: "attestationResponse", value: response } });
}
