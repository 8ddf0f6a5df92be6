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
export async function getJson<T>(path: string, key = apiKey()): Promise<T> {
  const headers: Record<string, string> = { accept: "application/json" };
  if (key !== undefined) headers.authorization = `Bearer ${key}`;
  let response: Response;
  try {
    response = await fetch(path, { headers, credentials: "omit", cache: "no-store" });
  } catch {
    throw new ApiError("The coordinator could not be reached.", 0);
  }
  const body: unknown = await response.json().catch(() => undefined);
  if (!response.ok) {
    const message = (body as { error?: { message?: unknown } } | undefined)?.error?.message;
    throw new ApiError(typeof message === "string" ? message : `HTTP ${response.status}`, response.status);
  }
  return body as T;
}
