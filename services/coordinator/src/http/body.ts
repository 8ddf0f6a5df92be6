import { invalidRequest, payloadTooLarge } from "../errors/index.js";
import type { HttpRequest } from "./types.js";

/** Reads the whole request body, refusing more than `limit` bytes (413) before buffering it. */
export function readBody(req: HttpRequest, limit: number): Promise<Uint8Array> {
  const declared = req.headers["content-length"];
  if (declared !== undefined && Number(declared) > limit) {
    req.resume();
    return Promise.reject(payloadTooLarge(limit));
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
        req.resume();
        reject(payloadTooLarge(limit));
        return;
      }
      chunks.push(chunk);
    };
    req.on("data", onData);
    req.once("end", () => {
      if (done) return;
      done = true;
      resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size));
    });
    req.once("error", (e: Error) => {
      if (done) return;
      done = true;
      reject(invalidRequest(`The request body could not be read: ${e.message}`));
    });
  });
}
