import type { MessageJsonType } from "@bufbuild/protobuf";
import type { AdminService } from "@darkbloom/protocol/admin/v1";
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

/** The AdminService's methods (lowerCamelCase), each with its input and output descriptors. */
type AdminMethods = (typeof AdminService)["method"];

/**
 * Calls a method of the typed AdminService over Connect's JSON protocol (a POST of the request's
 * JSON form; the answer is the response's), with the signed-in admin key or `key`. The request and
 * response are typed with the JSON forms generated from admin.proto (`json_types`), imported as
 * types only: the page ships no protobuf runtime, and no copy of a message's shape is written here.
 */
export function admin<M extends keyof AdminMethods & string>(
  method: M,
  request: MessageJsonType<AdminMethods[M]["input"]>,
  key = apiKey(),
): Promise<MessageJsonType<AdminMethods[M]["output"]>> {
  // The wire name is the proto's: the generated lowerCamelCase name with its first letter raised.
  const name = method.charAt(0).toUpperCase() + method.slice(1);
  return call(`/darkbloom.admin.v1.AdminService/${name}`, request, key);
}

/**
 * POSTs a JSON body (as the exact text given: a verifier hashes it) to a streaming endpoint with the
 * signed-in key, and yields the response's bytes as they arrive. A refusal before the stream starts
 * throws ApiError with the coordinator's message; `signal` stops it.
 */
export async function* openStream(
  path: string,
  body: string,
  signal: AbortSignal,
): AsyncGenerator<Uint8Array> {
  const key = apiKey();
  const headers: Record<string, string> = { "content-type": "application/json", accept: "text/event-stream" };
  if (key !== undefined) headers.authorization = `Bearer ${key}`;
  let response: Response;
  try {
    response = await fetch(path, {
      method: "POST",
      headers,
      body,
      credentials: "omit",
      cache: "no-store",
      signal,
    });
  } catch (error) {
    if (signal.aborted) throw error;
    throw new ApiError("The coordinator could not be reached.", 0);
  }
  if (!response.ok || response.body === null) {
    const shaped = (await response.json().catch(() => undefined)) as
      | { error?: { message?: unknown } }
      | undefined;
    const message = shaped?.error?.message;
    throw new ApiError(typeof message === "string" ? message : `HTTP ${response.status}`, response.status);
  }
  const reader = response.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      yield value;
    }
  } finally {
    reader.releaseLock();
  }
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
