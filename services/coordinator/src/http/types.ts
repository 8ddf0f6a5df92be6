import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";

/** A request from either HTTP/1.1 or HTTP/2 (Node's compatibility API). */
export type HttpRequest = IncomingMessage | Http2ServerRequest;

/** The part of Node's response API (HTTP/1.1 and HTTP/2 compatibility) the handlers use. */
export interface HttpResponse {
  statusCode: number;
  readonly headersSent: boolean;
  readonly writableEnded: boolean;
  readonly writableFinished: boolean;
  setHeader(name: string, value: string | number | readonly string[]): unknown;
  writeHead(status: number, headers?: OutgoingHttpHeaders): unknown;
  write(chunk: string | Uint8Array): boolean;
  end(chunk?: string | Uint8Array): unknown;
  /** Bytes written but not yet handed to the kernel (HTTP/1.1: this response and its socket). */
  readonly writableLength: number;
  on(event: "close" | "drain" | "finish", listener: () => void): unknown;
  once(event: "close" | "drain" | "finish", listener: () => void): unknown;
  off(event: "close" | "drain" | "finish", listener: () => void): unknown;
  /** HTTP/2: the response's stream (bufferSize counts what nghttp2 holds of it too). */
  readonly stream?: { readonly bufferSize: number; close(code?: number): void };
  /** Closes the connection (HTTP/1.1) or resets the stream (HTTP/2) at once. */
  destroy(): unknown;
  flushHeaders(): void;
}

export function asResponse(res: ServerResponse | Http2ServerResponse): HttpResponse {
  return res as unknown as HttpResponse;
}

export type Handler = (req: HttpRequest, res: HttpResponse) => Promise<void> | void;
