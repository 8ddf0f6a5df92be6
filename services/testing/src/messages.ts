import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  type ConnectRequest,
  ConnectRequestSchema,
  type HeartbeatSchema,
  type InferenceError,
  type LoadModelState,
  type RegisterSchema,
} from "@darkbloom/protocol/provider/v1";
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

export function completeMessage(
  requestId: string,
  promptTokens: number,
  completionTokens: number,
  choices: number,
  finishReason: string,
): ConnectRequest {
  const ends = Array.from({ length: choices }, (_, index) => ({ index, finishReason }));
  return create(ConnectRequestSchema, {
    message: {
      case: "inferenceComplete",
      value: { requestId, usage: { promptTokens, completionTokens }, choices: ends },
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
