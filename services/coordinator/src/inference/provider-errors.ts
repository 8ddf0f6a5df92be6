import type { InferenceError } from "@darkbloom/protocol/provider/v1";
import { ApiError, providerError } from "../errors/index.js";

/**
 * Maps a provider's InferenceError to what the consumer sees: client errors pass through (a context
 * overflow names `contextParam`, the request's input field).
 */
export function providerErrorFrom(e: InferenceError, contextParam = "messages"): ApiError {
  if (e.httpStatus >= 400 && e.httpStatus < 500 && e.httpStatus !== 408 && e.httpStatus !== 429) {
    return new ApiError({
      status: e.httpStatus,
      type: "invalid_request_error",
      code: e.code || "invalid_request_error",
      message: e.message || "The provider rejected the request.",
      param: e.code === "context_length_exceeded" ? contextParam : null,
    });
  }
  return providerError(
    e.message || "The provider failed to complete the request.",
    e.code || "provider_error",
  );
}
