import type { ApiError } from "../errors/index.js";
import type { HttpResponse } from "./types.js";

export function sendJson(
  res: HttpResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  if (res.writableEnded) return;
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    ...headers,
    "content-type": "application/json",
    "content-length": Buffer.byteLength(payload),
  });
  res.end(payload);
}

/** Writes an error in OpenAI's shape, with its extra headers (Retry-After, Allow). */
export function sendError(res: HttpResponse, error: ApiError, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    if (!res.writableEnded) res.end();
    return;
  }
  sendJson(res, error.status, error.toJSON(), { ...headers, ...error.headers });
}
