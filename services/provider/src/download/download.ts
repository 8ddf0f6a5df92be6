import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, rename, rm, stat } from "node:fs/promises";
import { dirname } from "node:path";
import { Readable } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";

export interface DownloadProgress {
  /** Bytes in the partial file now (including what an earlier attempt left). */
  received: number;
  /** Full size when the server says it. */
  total: number | undefined;
  /** Bytes that were already there when this attempt started. */
  resumedFrom: number;
}

export interface DownloadOptions {
  url: string;
  /** Final path; the download goes to `<dest>.partial` and is renamed when complete and verified. */
  dest: string;
  /** Expected lowercase hex SHA-256; a mismatch deletes the partial file. */
  sha256?: string | undefined;
  /** Checks the complete file before it is renamed into place (e.g. that it is a GGUF model). */
  verify?: (path: string) => Promise<void>;
  onProgress?: (progress: DownloadProgress) => void;
  fetch?: typeof fetch;
  signal?: AbortSignal;
  /** Sent as `Authorization` to the URL's origin only, never to where it redirects elsewhere. */
  authorization?: string | undefined;
}

export interface DownloadResult {
  path: string;
  sizeBytes: number;
  sha256: string;
  resumedFrom: number;
}

/** A download that did not complete or did not verify; the message says what to do. */
export class DownloadError extends Error {
  override readonly name = "DownloadError";
}

/**
 * Downloads `url` to `dest` with resume: bytes already in `<dest>.partial` are kept and the rest is
 * asked for with an HTTP Range request (a server that ignores it sends everything again, and the
 * partial file restarts). The SHA-256 is computed over the whole file, checked against `sha256` when
 * given, and the file is renamed into place atomically.
 */
export async function downloadFile(options: DownloadOptions): Promise<DownloadResult> {
  const doFetch = options.fetch ?? globalThis.fetch;
  const partial = `${options.dest}.partial`;
  await mkdir(dirname(options.dest), { recursive: true });
  const existing = await sizeOf(partial);

  const hash = createHash("sha256");
  if (existing > 0) await hashFile(partial, hash);
  const headers: Record<string, string> = {};
  if (existing > 0) headers.range = `bytes=${existing}-`;
  let response: Response;
  try {
    response = await fetchFollowing(doFetch, options.url, {
      headers,
      signal: options.signal,
      authorization: options.authorization,
    });
  } catch (error) {
    throw new DownloadError(`cannot fetch ${options.url}: ${describe(error)}`);
  }

  let total: number | undefined;
  let append = false;
  if (existing > 0 && response.status === 206) {
    const range = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(response.headers.get("content-range") ?? "");
    if (!range || Number(range[1]) !== existing) {
      await response.body?.cancel();
      throw new DownloadError(
        `the server answered the range request with ${response.headers.get("content-range") ?? "no Content-Range"}`,
      );
    }
    total = range[3] === "*" ? undefined : Number(range[3]);
    append = true;
  } else if (existing > 0 && response.status === 416) {
    // Nothing left to send: the partial file may be complete already.
    await response.body?.cancel();
    const size = /^bytes \*\/(\d+)$/.exec(response.headers.get("content-range") ?? "")?.[1];
    if (size === undefined || Number(size) !== existing) {
      await rm(partial, { force: true });
      return downloadFile(options);
    }
    total = existing;
  } else if (response.status === 200) {
    const length = response.headers.get("content-length");
    total = length !== null && /^\d+$/.test(length) ? Number(length) : undefined;
    // A server that ignores the range sends everything again: start the partial file over.
    if (existing > 0) return finish(options, response, createHash("sha256"), partial, 0, total, false);
  } else {
    await response.body?.cancel();
    throw new DownloadError(`${options.url} answered HTTP ${response.status} ${response.statusText}`.trim());
  }

  return finish(options, response, hash, partial, existing, total, append);
}

const MAX_REDIRECTS = 10;

/**
 * GET with redirects followed here rather than by fetch, so that credentials go to the origin they
 * were given for and nowhere else: a hub redirects LFS files to a CDN (another origin), which must
 * not see the token.
 */
export async function fetchFollowing(
  doFetch: typeof fetch,
  url: string,
  init: {
    headers?: Record<string, string>;
    signal?: AbortSignal | undefined;
    authorization?: string | undefined;
  },
): Promise<Response> {
  const origin = new URL(url).origin;
  let current = url;
  for (let hops = 0; ; hops++) {
    const headers = { ...init.headers };
    if (init.authorization && new URL(current).origin === origin) headers.authorization = init.authorization;
    const response = await doFetch(current, { headers, redirect: "manual", signal: init.signal ?? null });
    const location = response.headers.get("location");
    if (response.status < 300 || response.status > 399 || location === null) return response;
    await response.body?.cancel();
    if (hops === MAX_REDIRECTS) throw new Error(`more than ${MAX_REDIRECTS} redirects`);
    current = new URL(location, current).toString();
  }
}

async function finish(
  options: DownloadOptions,
  response: Response,
  hash: Hash,
  partial: string,
  resumedFrom: number,
  total: number | undefined,
  append: boolean,
): Promise<DownloadResult> {
  let received = resumedFrom;
  const report = () => options.onProgress?.({ received, total, resumedFrom });
  if (response.status !== 416 && response.body) {
    const file = await open(partial, append ? "a" : "w", 0o644);
    try {
      report();
      const body = Readable.fromWeb(response.body as unknown as WebReadableStream<Uint8Array>);
      for await (const chunk of body) {
        const bytes = chunk as Uint8Array;
        await file.write(bytes);
        hash.update(bytes);
        received += bytes.length;
        report();
      }
      await file.sync();
    } catch (error) {
      throw new DownloadError(
        `download interrupted after ${received} bytes (${describe(error)}); run the command again to resume`,
      );
    } finally {
      await file.close();
    }
  }
  if (total !== undefined && received !== total) {
    throw new DownloadError(
      `download ended after ${received} of ${total} bytes; run the command again to resume`,
    );
  }
  const sha256 = hash.digest("hex");
  if (options.sha256 && options.sha256.toLowerCase() !== sha256) {
    await rm(partial, { force: true });
    throw new DownloadError(
      `SHA-256 mismatch: expected ${options.sha256.toLowerCase()}, got ${sha256}; the download was deleted`,
    );
  }
  if (options.verify) {
    try {
      await options.verify(partial);
    } catch (error) {
      await rm(partial, { force: true });
      throw new DownloadError(`the downloaded file is not usable: ${describe(error)}; it was deleted`);
    }
  }
  await rename(partial, options.dest);
  return { path: options.dest, sizeBytes: received, sha256, resumedFrom };
}

async function sizeOf(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}

function hashFile(path: string, hash: Hash): Promise<void> {
  return new Promise((resolve, reject) => {
    createReadStream(path)
      .on("data", (chunk) => hash.update(chunk))
      .on("error", reject)
      .on("end", () => resolve());
  });
}

function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = (error as { cause?: unknown }).cause;
  return cause instanceof Error ? `${error.message}: ${cause.message}` : error.message;
}
