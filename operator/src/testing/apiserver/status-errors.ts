import type { FieldCause } from "./crd-schema/types.js";
import type { JsonObject } from "./json.js";

/** Identifies what an error is about, as the `details` of a real Status does. */
export interface ErrorTarget {
  group: string;
  /** The plural resource ("deployments"), or for Invalid the kind ("Deployment"), as the real server puts it. */
  kind: string;
  name?: string;
}

/**
 * A failed request, answered as a `metav1.Status`. Handlers throw it; the router turns it into the
 * response, so every failure has the real body shape whichever layer detected it.
 */
export class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: { target?: ErrorTarget; causes?: FieldCause[]; retryAfterSeconds?: number },
  ) {
    super(message);
  }

  toStatus(): JsonObject {
    const details: JsonObject = {};
    const target = this.details?.target;
    if (target?.name !== undefined) details.name = target.name;
    if (target?.group) details.group = target.group;
    if (target) details.kind = target.kind;
    if (this.details?.causes) details.causes = this.details.causes.map((c) => ({ ...c }));
    if (this.details?.retryAfterSeconds) details.retryAfterSeconds = this.details.retryAfterSeconds;
    const status: JsonObject = {
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message: this.message,
      reason: this.reason,
      code: this.code,
    };
    if (Object.keys(details).length > 0) status.details = details;
    return status;
  }
}

/** `deployments.apps`, or `pods` for the core group: how the real server names a resource in messages. */
export function groupResource(group: string, resource: string): string {
  return group ? `${resource}.${group}` : resource;
}

export function notFound(group: string, resource: string, name: string): ApiError {
  return new ApiError(404, "NotFound", `${groupResource(group, resource)} "${name}" not found`, {
    target: { group, kind: resource, name },
  });
}

export function alreadyExists(group: string, resource: string, name: string): ApiError {
  return new ApiError(409, "AlreadyExists", `${groupResource(group, resource)} "${name}" already exists`, {
    target: { group, kind: resource, name },
  });
}

export const MODIFIED_MESSAGE =
  "the object has been modified; please apply your changes to the latest version and try again";

export function conflict(group: string, resource: string, name: string, message: string): ApiError {
  return new ApiError(
    409,
    "Conflict",
    `Operation cannot be fulfilled on ${groupResource(group, resource)} "${name}": ${message}`,
    { target: { group, kind: resource, name } },
  );
}

/** 422: `Deployment.apps "x" is invalid: spec.selector: Required value`, the causes listed in details. */
export function invalid(group: string, kind: string, name: string, causes: FieldCause[]): ApiError {
  const groupKind = group ? `${kind}.${group}` : kind;
  const parts = causes.map((c) => (c.field ? `${c.field}: ${c.message}` : c.message));
  const summary = parts.length === 1 ? parts[0] : `[${parts.join(", ")}]`;
  return new ApiError(422, "Invalid", `${groupKind} "${name}" is invalid: ${summary}`, {
    target: { group, kind, name },
    causes,
  });
}

export function badRequest(message: string): ApiError {
  return new ApiError(400, "BadRequest", message);
}

export function methodNotAllowed(message: string): ApiError {
  return new ApiError(405, "MethodNotAllowed", message);
}

export function unsupportedMediaType(message: string): ApiError {
  return new ApiError(415, "UnsupportedMediaType", message);
}

export function forbidden(
  group: string,
  resource: string,
  name: string | undefined,
  message: string,
): ApiError {
  const subject = name ? `${groupResource(group, resource)} "${name}"` : groupResource(group, resource);
  return new ApiError(403, "Forbidden", `${subject} is forbidden: ${message}`, {
    target: { group, kind: resource, ...(name ? { name } : {}) },
  });
}

export function resourceNotFound(): ApiError {
  return new ApiError(404, "NotFound", "the server could not find the requested resource");
}

/** The reason the real server gives each code, for errors built from a bare code (injected faults). */
export function reasonForCode(code: number): string {
  const reasons: Record<number, string> = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
  };
  return reasons[code] ?? "Unknown";
}
