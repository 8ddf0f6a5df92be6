import { brotliDecompressSync, gunzipSync } from "node:zlib";
import { fromBinary } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  createConnectRouter,
  createContextValues,
} from "@connectrpc/connect";
import type { UniversalHandler } from "@connectrpc/connect/protocol";
import {
  compressionBrotli,
  compressionGzip,
  universalRequestFromNodeRequest,
  universalResponseToNodeResponse,
} from "@connectrpc/connect-node";
import type { Logger } from "../log.js";
import { cutOff, watchProgress } from "./bounded-writer.js";
import { CLIENT_ADDRESS } from "./client-address.js";
import type { Handler, HttpRequest, HttpResponse } from "./types.js";

export interface ConnectHandlerOptions {
  routes: (router: ConnectRouter) => void;
  /** The largest message (after decompression) any method accepts. */
  readMaxBytes: number;
  /**
   * A response to a consumer (any call but a request-streaming one) that holds bytes its consumer
   * takes none of for this long is closed; onStall is told.
   */
  sendTimeoutMs?: number;
  onStall?: () => void;
  log: Logger;
  /** The client address handlers read from CLIENT_ADDRESS (per-address limits). */
  addressOf: (req: HttpRequest) => string;
}

/**
 * The Connect, gRPC and gRPC-Web routes as one Node handler: what connect-node's adapter does, with
 * two differences. A unary Connect request in the binary format whose body is not a message of the
 * method's input type is answered 400 `invalid_argument`, as a malformed JSON body is: connect-es
 * reports the binary case as `internal`, an HTTP 500, so a client's garbage would read as the
 * coordinator failing (connect-go answers invalid_argument). And failures are logged with pino.
 */
export function createConnectHandler(o: ConnectHandlerOptions): ConnectHandler {
  const router = createConnectRouter({
    acceptCompression: [compressionGzip, compressionBrotli],
    readMaxBytes: o.readMaxBytes,
  });
  o.routes(router);
  const paths = new Map<string, UniversalHandler>(router.handlers.map((h) => [h.requestPath, h]));
  const streamingPaths = new Set(
    router.handlers
      .filter((h) => h.method.methodKind === "client_streaming" || h.method.methodKind === "bidi_streaming")
      .map((h) => h.requestPath),
  );
  const handle = async (req: HttpRequest, res: HttpResponse) => {
    const handler = paths.get((req.url ?? "").split("?", 2)[0] ?? "");
    if (!handler) {
      res.writeHead(404);
      res.end();
      return;
    }
    const values = createContextValues().set(CLIENT_ADDRESS, o.addressOf(req));
    let uReq = universalRequestFromNodeRequest(req as never, res as never, undefined, values);
    if (handler.method.methodKind === "unary" && binaryConnectUnary(req)) {
      let bytes: Uint8Array | undefined;
      try {
        bytes = await collect(uReq.body as AsyncIterable<Uint8Array>, o.readMaxBytes);
      } catch {
        // The body was cut (the body deadline answered 408) or reset by the client: nobody to answer.
        if (!res.writableEnded) res.destroy();
        return;
      }
      const problem =
        bytes === undefined
          ? `message size is larger than the configured readMaxBytes ${o.readMaxBytes}`
          : undecodable(handler, req, bytes, o);
      if (problem !== undefined) {
        const tooLarge = bytes === undefined;
        writeConnectError(
          res,
          tooLarge ? 429 : 400,
          tooLarge ? "resource_exhausted" : "invalid_argument",
          problem,
        );
        return;
      }
      uReq = { ...uReq, body: once(bytes as Uint8Array) };
    }
    // Until the response is out (it stops by itself when the response finishes or closes).
    if (o.sendTimeoutMs !== undefined && !streamingPaths.has(handler.requestPath)) {
      watchProgress(res, o.sendTimeoutMs, () => {
        cutOff(res);
        o.onStall?.();
      });
    }
    try {
      await universalResponseToNodeResponse(await handler(uReq), res as never);
    } catch (reason) {
      if (ConnectError.from(reason).code === Code.Aborted) return;
      o.log.warn(
        { rpc: `${handler.service.typeName}/${handler.method.name}`, err: String(reason) },
        "rpc response failed",
      );
    }
  };
  return Object.assign(handle, {
    isRequestStream: (req: HttpRequest) => streamingPaths.has((req.url ?? "").split("?", 2)[0] ?? ""),
  });
}

/** The Connect routes' handler, and which of its requests stream for as long as their response. */
export interface ConnectHandler extends Handler {
  isRequestStream(req: HttpRequest): boolean;
}

/** A unary call of the Connect protocol with a binary body (`application/proto`), sent by POST. */
function binaryConnectUnary(req: HttpRequest): boolean {
  const type = (req.headers["content-type"] ?? "").split(";")[0]?.trim().toLowerCase();
  return req.method === "POST" && type === "application/proto";
}

/** Why `bytes` is not a message of the method's input type; undefined when it is (or cannot be told). */
function undecodable(
  handler: UniversalHandler,
  req: HttpRequest,
  bytes: Uint8Array,
  o: ConnectHandlerOptions,
): string | undefined {
  const encoding = String(req.headers["content-encoding"] ?? "identity").toLowerCase();
  let message: Uint8Array;
  try {
    const limit = { maxOutputLength: o.readMaxBytes };
    if (encoding === "identity") message = bytes;
    else if (encoding === "gzip") message = gunzipSync(bytes, limit);
    else if (encoding === "br") message = brotliDecompressSync(bytes, limit);
    else return undefined; // the router answers an unsupported encoding itself
  } catch {
    return undefined; // the router reports a bad or oversized compressed body itself
  }
  try {
    fromBinary(handler.method.input, message);
    return undefined;
  } catch (e) {
    return `parse binary: ${e instanceof Error ? e.message : String(e)}`;
  }
}

/** The whole body, or undefined past `max` bytes. */
async function collect(body: AsyncIterable<Uint8Array>, max: number): Promise<Uint8Array | undefined> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.byteLength;
    if (size > max) return undefined;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

async function* once(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  yield bytes;
}

/** A Connect unary error response (the protocol's JSON error body). */
function writeConnectError(res: HttpResponse, status: number, code: string, message: string): void {
  const body = JSON.stringify({ code, message });
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": String(Buffer.byteLength(body)),
  });
  res.end(body);
}
