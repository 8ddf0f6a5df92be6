import { Code, ConnectError } from "@connectrpc/connect";
import type { ApiError } from "../errors/index.js";

/** Maps an ApiError to a ConnectError, keeping the OpenAI code and param in response metadata. */
export function toConnectError(e: ApiError): ConnectError {
  const metadata = new Headers({ "x-error-type": e.type, "x-error-code": e.code });
  if (e.param) metadata.set("x-error-param", e.param);
  const retryAfter = e.headers["Retry-After"];
  if (retryAfter) metadata.set("retry-after", retryAfter);
  return new ConnectError(e.message, codeFor(e.status), metadata);
}

function codeFor(status: number): Code {
  switch (status) {
    case 400:
    case 413:
    case 415:
      return Code.InvalidArgument;
    case 401:
      return Code.Unauthenticated;
    case 402:
      return Code.FailedPrecondition;
    case 403:
      return Code.PermissionDenied;
    case 404:
      return Code.NotFound;
    case 429:
      return Code.ResourceExhausted;
    case 503:
      return Code.Unavailable;
    case 502:
      return Code.Unavailable;
    default:
      return Code.Internal;
  }
}
