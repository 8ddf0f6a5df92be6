import { isDatabaseUnavailable } from "../store/errors.js";
import { ApiError } from "./api-error.js";

// One factory per row of SPEC section 3's error table, so every call site says which error it means.

export function invalidRequest(message: string, param: string | null = null, code?: string): ApiError {
  return new ApiError({
    status: 400,
    type: "invalid_request_error",
    message,
    param,
    ...(code ? { code } : {}),
  });
}

/** A required field of a JSON body is absent (or null, or empty). */
export function missingParameter(param: string): ApiError {
  return invalidRequest(`Missing required parameter: '${param}'.`, param, "missing_required_parameter");
}

/** A field of a JSON body or a query parameter has the wrong JSON type. */
export function invalidType(param: string, expected: string): ApiError {
  return invalidRequest(`'${param}' must be ${expected}.`, param, "invalid_type");
}

/** Something the request names (a code, a cursor) does not exist: 404 with a specific code. */
export function resourceNotFound(message: string, code: string, param: string | null): ApiError {
  return new ApiError({ status: 404, type: "invalid_request_error", code, param, message });
}

/** The device-code token endpoint's answers other than a token (RFC 8628 section 3.5), as HTTP 400. */
export type DeviceTokenErrorCode =
  | "authorization_pending"
  | "slow_down"
  | "expired_token"
  | "access_denied"
  | "invalid_grant";

export function deviceTokenError(code: DeviceTokenErrorCode, message: string): ApiError {
  return invalidRequest(message, "device_code", code);
}

export function modelNotFound(model: string): ApiError {
  return new ApiError({
    status: 404,
    type: "invalid_request_error",
    code: "model_not_found",
    param: "model",
    message: `The model '${model}' does not exist or is not served by this network.`,
  });
}

export function contextLengthExceeded(requested: number, limit: number, param = "messages"): ApiError {
  return new ApiError({
    status: 400,
    type: "invalid_request_error",
    code: "context_length_exceeded",
    param,
    message: `This request needs ${requested} tokens (prompt plus max_tokens), but the largest context any provider of this model serves is ${limit} tokens. Shorten the prompt or lower max_tokens.`,
  });
}

export function invalidApiKey(message = "Incorrect or revoked API key provided."): ApiError {
  return new ApiError({ status: 401, type: "authentication_error", code: "invalid_api_key", message });
}

export function insufficientFunds(message: string): ApiError {
  return new ApiError({ status: 402, type: "insufficient_funds", code: "insufficient_quota", message });
}

export function rateLimited(retryAfterSeconds: number, message = "Rate limit exceeded."): ApiError {
  return new ApiError({
    status: 429,
    type: "rate_limit_exceeded",
    code: "rate_limit_exceeded",
    message,
    headers: { "Retry-After": String(Math.max(1, Math.ceil(retryAfterSeconds))) },
  });
}

export function modelNotAvailable(model: string, reason: string, retryAfterSeconds: number): ApiError {
  return new ApiError({
    status: 503,
    type: "service_unavailable",
    code: "model_not_available",
    param: "model",
    message: `No provider could take a request for '${model}' in time (${reason}). Retry later.`,
    headers: { "Retry-After": String(Math.max(1, Math.ceil(retryAfterSeconds))) },
  });
}

/** A provider failed; after the first byte this reaches the consumer as an SSE error event. */
export function providerError(message: string, code = "provider_error", status = 502): ApiError {
  return new ApiError({ status, type: "provider_error", code, message });
}

export function notFound(path: string): ApiError {
  return new ApiError({
    status: 404,
    type: "invalid_request_error",
    code: "not_found",
    message: `Unknown endpoint: ${path}`,
  });
}

export function methodNotAllowed(method: string, path: string, allowed: string): ApiError {
  return new ApiError({
    status: 405,
    type: "invalid_request_error",
    code: "method_not_allowed",
    message: `${method} is not supported on ${path}; use ${allowed}.`,
    headers: { Allow: allowed },
  });
}

export function payloadTooLarge(limitBytes: number): ApiError {
  return new ApiError({
    status: 413,
    type: "invalid_request_error",
    code: "request_too_large",
    message: `The request body is larger than the ${limitBytes}-byte limit.`,
  });
}

export function unsupportedMediaType(got: string): ApiError {
  return new ApiError({
    status: 415,
    type: "invalid_request_error",
    code: "unsupported_media_type",
    message: `Content-Type must be application/json, got '${got}'.`,
  });
}

export function internalError(): ApiError {
  return new ApiError({
    status: 500,
    type: "server_error",
    code: "internal_error",
    message: "The coordinator failed to process the request. It has been logged.",
  });
}

/** A dependency (the database) cannot be reached: the client should retry shortly (SPEC: 503). */
export function serviceUnavailable(message: string, code: string, retryAfterSeconds = 1): ApiError {
  return new ApiError({
    status: 503,
    type: "service_unavailable",
    code,
    message,
    headers: { "Retry-After": String(retryAfterSeconds) },
  });
}

/**
 * What the consumer gets for an error that is not an ApiError: 503 `database_unavailable` when
 * PostgreSQL cannot be reached (an outage is not the coordinator failing), else 500.
 */
export function unexpectedError(e: unknown): ApiError {
  if (isDatabaseUnavailable(e)) {
    return serviceUnavailable(
      "The coordinator's database is unavailable; retry shortly.",
      "database_unavailable",
    );
  }
  return internalError();
}

export function serviceShuttingDown(): ApiError {
  return new ApiError({
    status: 503,
    type: "service_unavailable",
    code: "shutting_down",
    message: "The coordinator is shutting down; retry on another replica.",
    headers: { "Retry-After": "1" },
  });
}
