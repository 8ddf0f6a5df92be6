import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { encodeChunkPayload } from "@darkbloom/protocol";
import {
  type ConnectRequest,
  ConnectRequestSchema,
  type HeartbeatSchema,
  type InferenceError,
  type LoadModelState,
  type RegisterSchema,
  type ResponseSignatureSchema,
} from "@darkbloom/protocol/provider/v1";
import { type BoxKey, wipe } from "@darkbloom/protocol/sealed-box";
import type { ScriptError } from "./script.js";

/**
 * Builders for the messages a provider sends. The per-token ones (chunks) are object literals rather
 * than create() calls: protobuf-es messages are plain objects, and a benchmark sends millions of them.
 */

export function registerMessage(register: MessageInitShape<typeof RegisterSchema>): ConnectRequest {
  return create(ConnectRequestSchema, { message: { case: "register", value: register } });
}

export function heartbeatMessage(heartbeat: MessageInitShape<typeof HeartbeatSchema>): ConnectRequest {
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

export function chunkMessage(
  requestId: string,
  sequence: bigint,
  text: string,
  tokenCount: number,
  choiceIndex: number,
): ConnectRequest {
  return {
    $typeName: "darkbloom.provider.v1.ConnectRequest",
    message: {
      case: "inferenceChunk",
      value: {
        $typeName: "darkbloom.provider.v1.InferenceChunk",
        requestId,
        sequence,
        payload: {
          case: "plaintext",
          value: { $typeName: "darkbloom.provider.v1.ChunkPayload", text, tokenCount, choiceIndex },
        },
      },
    },
  };
}

/**
 * A chunk whose ChunkPayload is serialized and sealed with the request's box key. sender_public_key
 * stays empty: the coordinator knows the provider's key.
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
  return {
    $typeName: "darkbloom.provider.v1.ConnectRequest",
    message: {
      case: "inferenceChunk",
      value: {
        $typeName: "darkbloom.provider.v1.InferenceChunk",
        requestId,
        sequence,
        payload: {
          case: "sealed",
          value: {
            $typeName: "darkbloom.provider.v1.SealedBox",
            senderPublicKey: EMPTY,
            nonce,
            ciphertext,
          },
        },
      },
    },
  };
}

const EMPTY = new Uint8Array();

export type ResponseSignatureInit = MessageInitShape<typeof ResponseSignatureSchema>;

export function completeMessage(
  requestId: string,
  promptTokens: number,
  completionTokens: number,
  choices: number,
  finishReason: string,
  signature?: ResponseSignatureInit,
): ConnectRequest {
  const ends = Array.from({ length: choices }, (_, index) => ({ index, finishReason }));
  return create(ConnectRequestSchema, {
    message: {
      case: "inferenceComplete",
      value: { requestId, usage: { promptTokens, completionTokens }, choices: ends, signature },
    },
  });
}

export function errorMessage(requestId: string, error: ScriptError): ConnectRequest {
  const value: InferenceError = {
    $typeName: "darkbloom.provider.v1.InferenceError",
    requestId,
    httpStatus: error.httpStatus,
    code: error.code,
    message: error.message,
    retryable: error.retryable,
  };
  return { $typeName: "darkbloom.provider.v1.ConnectRequest", message: { case: "inferenceError", value } };
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
  nonce: Uint8Array,
  timestampMs: bigint,
  status: Uint8Array,
): ConnectRequest {
  return create(ConnectRequestSchema, {
    message: { case: "attestationResponse", value: { nonce, timestampMs, status } },
  });
}
