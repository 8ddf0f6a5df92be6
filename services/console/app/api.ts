import { apiKey } from "./session.js";

/** A coordinator error, with its OpenAI-shaped message and the HTTP status. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

/**
 * GETs one of the coordinator's JSON endpoints (same origin) with the signed-in key, or `key` when
 * given (signing in checks it first). Throws ApiError with the coordinator's message.
 */
export function getJson<T>(path: string, key = apiKey()): Promise<T> {
  return call<T>(path, undefined, key);
}

/** POSTs a JSON body to one of the coordinator's endpoints with the signed-in key. */
export function postJson<T>(path: string, body: unknown): Promise<T> {
  return call<T>(path, body, apiKey());
}

/**
 * Calls a method of the typed AdminService over Connect's JSON protocol (a POST of the request's
 * JSON form; the answer is the response's), with the signed-in admin key or `key`.
 */
export function admin<T>(method: string, request: unknown = {}, key = apiKey()): Promise<T> {
  return call<T>(`/darkbloom.admin.v1.AdminService/${method}`, request, key);
}

async function call<T>(path: string, request: unknown, key: string | undefined): Promise<T> {
  const headers: Record<string, string> = { accept: "application/json" };
  if (key !== undefined) headers.authorization = `Bearer ${key}`;
  const init: RequestInit = { headers, credentials: "omit", cache: "no-store" };
  if (request !== undefined) {
    headers["content-type"] = "application/json";
    init.method = "POST";
    init.body = JSON.stringify(request);
  }
  let response: Response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError("The coordinator could not be reached.", 0);
  }
  const body: unknown = await response.json().catch(() => undefined);
  if (!response.ok) {
    // OpenAI's shape on the HTTP routes ({error: {message}}), Connect's on the typed ones ({message}).
    const shaped = body as { error?: { message?: unknown }; message?: unknown } | undefined;
    const message = shaped?.error?.message ?? shaped?.message;
    throw new ApiError(typeof message === "string" ? message : `HTTP ${response.status}`, response.status);
  }
  return body as T;
}
