import type { InferenceFailure } from "@darkbloom/protocol/provider-client";
import { EngineError } from "../engine/engine.js";
import { BodyError } from "./request-body.js";

/**
 * Maps a failure to what the coordinator is told. Client errors (400 context_length_exceeded and
 * invalid requests) are never retryable; the rest are retryable on another provider only while
 * nothing was sent for the request.
 */
export function inferenceFailure(error: unknown, sentAnything: boolean): InferenceFailure {
  if (error instanceof BodyError) {
    return { httpStatus: 400, code: "invalid_request_error", message: error.message, retryable: false };
  }
  if (error instanceof EngineError) {
    switch (error.code) {
      case "context_length_exceeded":
        return { httpStatus: 400, code: error.code, message: error.message, retryable: false };
      case "invalid_request":
        return { httpStatus: 400, code: "invalid_request_error", message: error.message, retryable: false };
      case "engine_busy":
        return { httpStatus: 503, code: error.code, message: error.message, retryable: !sentAnything };
      case "model_not_found":
        return { httpStatus: 404, code: error.code, message: error.message, retryable: !sentAnything };
      case "model_load_failed":
      case "engine_failed":
        return { httpStatus: 500, code: error.code, message: error.message, retryable: !sentAnything };
      case "cancelled":
        // Not cancelled by us (that marks the request finished first): the engine stopped it.
        return Refusals.cancelledByEngine(sentAnything);
    }
  }
  // Unexpected errors may carry anything in their message; the coordinator gets a generic one.
  return {
    httpStatus: 500,
    code: "provider_error",
    message: "The provider failed while generating.",
    retryable: !sentAnything,
  };
}

export const Refusals = {
  draining: (): InferenceFailure => ({
    httpStatus: 503,
    code: "provider_draining",
    message: "The provider is draining and takes no new requests.",
    retryable: true,
  }),
  encryptionRequired: (): InferenceFailure => ({
    httpStatus: 400,
    code: "encryption_required",
    message: "This provider only accepts request bodies sealed to its encryption key.",
    retryable: false,
  }),
  unopenable: (): InferenceFailure => ({
    httpStatus: 500,
    code: "decryption_failed",
    message: "The sealed request body did not open with this provider's encryption key.",
    retryable: true,
  }),
  signingFailed: (): InferenceFailure => ({
    httpStatus: 500,
    code: "signing_failed",
    message: "The provider could not sign the response.",
    retryable: false,
  }),
  emptyBody: (): InferenceFailure => ({
    httpStatus: 400,
    code: "invalid_request_error",
    message: "The request has no body.",
    retryable: false,
  }),
  embeddingsUnsupported: (backend: string): InferenceFailure => ({
    httpStatus: 400,
    code: "invalid_request_error",
    message: `This provider's engine (${backend}) computes no embeddings.`,
    retryable: false,
  }),
  modelNotServed: (model: string): InferenceFailure => ({
    httpStatus: 404,
    code: "model_not_found",
    message: `Model ${JSON.stringify(model)} is not served by this provider.`,
    retryable: true,
  }),
  shutDown: (sentAnything: boolean): InferenceFailure => ({
    httpStatus: 503,
    code: "provider_shutting_down",
    message: "The provider shut down before the request finished.",
    retryable: !sentAnything,
  }),
  cancelledByEngine: (sentAnything: boolean): InferenceFailure => ({
    httpStatus: 503,
    code: "generation_cancelled",
    message: "The engine stopped the generation before it finished.",
    retryable: !sentAnything,
  }),
};
