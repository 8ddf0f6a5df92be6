import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  type AttestationResponseSchema,
  type ConnectRequest,
  ConnectRequestSchema,
  type HeartbeatSchema,
  type LoadModelState,
  type RegisterSchema,
  type ResponseSignatureSchema,
} from "@darkbloom/protocol/provider/v1";
import type { InferenceFailure } from "./errors.js";

/** Builders for what the provider sends (chunks are built by ChunkDraft). */

export function registerMessage(register: MessageInitShape<typeof RegisterSchema>): ConnectRequest {
  return create(ConnectRequestSchema, { message: { case: "register", value: register } });
}

export function heartbeatMessage(heartbeat: MessageInitShape<typeof HeartbeatSchema>): ConnectRequest {
  return create(ConnectRequestSchema, { message: { case: "heartbeat", value: heartbeat } });
}

export function acceptedMessage(requestId: string): ConnectRequest {
  return create(ConnectRequestSchema, { message: { case: "inferenceAccepted", value: { requestId } } });
}

export interface ChoiceOutcome {
  index: number;
  finishReason: string;
}

export type ResponseSignatureInit = MessageInitShape<typeof ResponseSignatureSchema>;

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
  return create(ConnectRequestSchema, {
    message: { case: "inferenceError", value: { requestId, ...failure } },
  });
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
