import http2 from "node:http2";
import { type ApiError, invalidRequest, payloadTooLarge } from "../errors/index.js";
import { isCut } from "./connection-guard.js";
import type { HttpRequest } from "./types.js";

/** How long a client may go on sending a refused body before its upload is cut off. */
export const CUT_REFUSED_UPLOAD_AFTER_MS = 1_000;
/** How long a cut HTTP/1.1 connection is still read (and discarded) so the client can read the 413. */
const LINGER_MS = 2_000;

/**
 * Reads the whole request body, refusing more than `limit` bytes (413) before buffering it. The rest
 * of a refused upload is discarded, and cut off once the 413 is out instead of being drained for as
 * long as the client keeps sending: over HTTP/2 the stream is reset with NO_ERROR once the 413 is
 * written (RFC 9113 §8.1); over HTTP/1.1 the connection is half-closed when the client has sent
 * another `limit` bytes or is still sending a second later, and closed after a short linger (closing
 * at once, with unread bytes, would reset the connection and could destroy the 413 in flight).
 */
export function readBody(req: HttpRequest, limit: number): Promise<Uint8Array> {
  const declared = req.headers["content-length"];
  if (declared !== undefined && Number(declared) > limit) {
    return Promise.reject(refuse(req, limit));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        done = true;
        req.off("data", onData);
        reject(refuse(req, limit));
        return;
      }
      chunks.push(chunk);
    };
    req.on("data", onData);
    req.once("end", () => {
      if (done) return;
      done = true;
      // HTTP/2's compatibility request also ends when its stream is reset or cut mid-body: what
      // arrived is then not the whole body.
      if (isCut(req)) reject(invalidRequest("The request body did not arrive in time."));
      else resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size));
    });
    if ("stream" in req) {
      req.once("aborted", () => {
        if (done) return;
        done = true;
        reject(invalidRequest("The request body could not be read: the stream was reset."));
      });
    }
    req.once("error", (e: Error) => {
      if (done) return;
      done = true;
      reject(invalidRequest(`The request body could not be read: ${e.message}`));
    });
  });
}

/** The 413 for an oversized body; arranges for the rest of the upload to be cut off. */
function refuse(req: HttpRequest, limit: number): ApiError {
  req.resume(); // discard what arrives until the upload is cut
  if ("stream" in req) {
    const stream = req.stream;
    // Outside the event: resetting a stream reentrantly from inside Node's HTTP/2 callbacks is unsafe.
    stream.once("finish", () =>
      setImmediate(() => {
        if (!stream.closed) stream.close(http2.constants.NGHTTP2_NO_ERROR);
      }),
    );
    return payloadTooLarge(limit);
  }
  // The connection is half-closed only once something (the 413) was written after the refusal, so
  // the answer always leaves before the FIN.
  const socket = req.socket;
  const writtenBefore = socket.bytesWritten;
  let discarded = 0;
  let cut = false;
  const cutOff = () => {
    if (cut || req.complete || socket.destroyed) return;
    if (socket.bytesWritten <= writtenBefore) {
      timer.refresh(); // not answered yet
      return;
    }
    cut = true;
    socket.end();
    setTimeout(() => socket.destroy(), LINGER_MS).unref();
  };
  const timer = setTimeout(cutOff, CUT_REFUSED_UPLOAD_AFTER_MS).unref();
  req.on("data", (chunk: Buffer) => {
    discarded += chunk.length;
    if (discarded > limit) setImmediate(cutOff);
  });
  req.once("end", () => clearTimeout(timer));
  return payloadTooLarge(limit);
}
