import type { Authenticator, Principal } from "../auth/authenticator.js";
import type { RateLimiter } from "../auth/rate-limiter.js";
import {
  type ApiError,
  invalidRequest,
  invalidType,
  isApiError,
  missingParameter,
  resourceNotFound,
  unexpectedError,
} from "../errors/index.js";
import type { Logger } from "../log.js";
import { InvalidArgumentError, NotFoundError } from "../store/errors.js";
import { readBody } from "./body.js";
import { newRequestId } from "./request-id.js";
import { sendError, sendJson } from "./respond.js";
import type { Handler, HttpRequest } from "./types.js";

/** What the small JSON endpoints (accounts, invites, referrals, device login) share. */
export interface JsonEndpointDeps {
  auth: Authenticator;
  /** The money tier's token buckets. */
  limiter: RateLimiter;
  log: Logger;
}

export type JsonObject = Record<string, unknown>;

export interface JsonEndpointContext {
  req: HttpRequest;
  requestId: string;
  /** The JSON object a POST carried; {} for a GET. */
  body: JsonObject;
  query: URLSearchParams;
}

export interface AccountEndpointContext extends JsonEndpointContext {
  principal: Principal;
}

/** These endpoints take a few short fields: a larger body is refused before it is buffered. */
const BODY_LIMIT_BYTES = 16 * 1024;
const MAX_FIELD_LENGTH = 512;

/**
 * An endpoint acting for the account of the API key it carries, in the money rate-limit tier. The
 * handler's result is sent as JSON with status 200; errors in OpenAI's shape.
 */
export function accountEndpoint(
  deps: JsonEndpointDeps,
  handle: (ctx: AccountEndpointContext) => Promise<unknown>,
): Handler {
  return endpoint(deps, async (ctx, headers) => {
    const principal = await deps.auth.authenticateRequest(ctx.req);
    Object.assign(headers, deps.limiter.take(principal.accountId));
    return handle({ ...ctx, principal, body: await readJsonObject(ctx.req) });
  });
}

/**
 * An endpoint without authentication (the device-login calls a daemon makes before it has a
 * token). With `limitByAddress`, each client address has a bucket in the money tier.
 */
export function publicEndpoint(
  deps: JsonEndpointDeps,
  handle: (ctx: JsonEndpointContext) => Promise<unknown>,
  options: { limitByAddress: boolean },
): Handler {
  return endpoint(deps, async (ctx, headers) => {
    if (options.limitByAddress) {
      Object.assign(headers, deps.limiter.take(`address:${deps.auth.addressOf(ctx.req)}`));
    }
    return handle({ ...ctx, body: await readJsonObject(ctx.req) });
  });
}

function endpoint(
  deps: JsonEndpointDeps,
  run: (ctx: JsonEndpointContext, headers: Record<string, string>) => Promise<unknown>,
): Handler {
  return async (req, res) => {
    const requestId = newRequestId();
    const headers: Record<string, string> = { "X-Request-ID": requestId };
    const url = req.url ?? "/";
    const q = url.indexOf("?");
    const query = new URLSearchParams(q === -1 ? "" : url.slice(q + 1));
    try {
      const body = await run({ req, requestId, body: {}, query }, headers);
      sendJson(res, 200, body, headers);
    } catch (e) {
      sendError(res, toApiError(e, deps.log, requestId), headers);
    }
  };
}

function toApiError(e: unknown, log: Logger, requestId: string): ApiError {
  if (isApiError(e)) return e;
  if (e instanceof InvalidArgumentError) return invalidRequest(`${e.message}.`, e.field, "invalid_value");
  if (e instanceof NotFoundError) return resourceNotFound(`${e.message}.`, "not_found", null);
  // Only the message and code: a driver error's detail can quote the values of the statement.
  const err =
    e instanceof Error ? { name: e.name, message: e.message, code: (e as { code?: unknown }).code } : e;
  const error = unexpectedError(e);
  if (error.status === 503) log.warn({ err, requestId }, "request failed: database unavailable");
  else log.error({ err, requestId }, "request failed unexpectedly");
  return error;
}

/** The request's JSON object body; {} for a request without a body (a GET). */
async function readJsonObject(req: HttpRequest): Promise<JsonObject> {
  if (req.method === "GET" || req.method === "HEAD") return {};
  const raw = await readBody(req, BODY_LIMIT_BYTES);
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString("utf8"));
  } catch (e) {
    throw invalidRequest(
      `We could not parse the JSON body of your request (${e instanceof Error ? e.message : "invalid JSON"}).`,
      null,
      "invalid_json",
    );
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw invalidRequest("The request body must be a JSON object.", null, "invalid_json");
  }
  return parsed as JsonObject;
}

/** A required string field: 400 missing_required_parameter when absent or empty, invalid_type when not a string. */
export function requiredString(body: JsonObject, field: string): string {
  const value = body[field];
  if (value === undefined || value === null || value === "") throw missingParameter(field);
  if (typeof value !== "string") throw invalidType(field, "a string");
  if (value.length > MAX_FIELD_LENGTH) {
    throw invalidRequest(`'${field}' is longer than ${MAX_FIELD_LENGTH} characters.`, field, "invalid_value");
  }
  return value;
}

/** An optional whole-number query parameter within [min, max]. */
export function queryInteger(
  query: URLSearchParams,
  name: string,
  bounds: { min: number; max: number; fallback: number },
): number {
  const raw = query.get(name);
  if (raw === null || raw === "") return bounds.fallback;
  const value = /^\d{1,9}$/.test(raw) ? Number(raw) : Number.NaN;
  if (!(value >= bounds.min && value <= bounds.max)) {
    throw invalidRequest(
      `'${name}' must be a whole number from ${bounds.min} to ${bounds.max}.`,
      name,
      "invalid_value",
    );
  }
  return value;
}

/** An optional request-id query parameter (a pagination cursor). */
export function queryRequestId(query: URLSearchParams, name: string): string | undefined {
  const raw = query.get(name);
  if (raw === null || raw === "") return undefined;
  if (!/^[A-Za-z0-9_-]{1,128}$/.test(raw)) {
    throw invalidRequest(
      `'${name}' must be the request_id of the last record of a previous page.`,
      name,
      "invalid_value",
    );
  }
  return raw;
}
