import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DownloadError, type DownloadProgress, downloadFile } from "./download.js";

const CONTENT = randomBytes(300_000);
const SHA = createHash("sha256").update(CONTENT).digest("hex");

interface Behaviour {
  /** Cut the connection after this many bytes of the body (first response only). */
  dropAfter?: number;
  /** Ignore Range headers and always send the whole file. */
  ignoreRange?: boolean;
  body?: Buffer;
}

let dir: string;
let server: Server;
let url: string;
let behaviour: Behaviour;
let ranges: (string | undefined)[];

function handler(req: IncomingMessage, res: ServerResponse): void {
  const body = behaviour.body ?? CONTENT;
  ranges.push(req.headers.range);
  const match = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
  if (match && !behaviour.ignoreRange) {
    const start = Number(match[1]);
    if (start >= body.length) {
      res.writeHead(416, { "content-range": `bytes */${body.length}` });
      res.end();
      return;
    }
    res.writeHead(206, {
      "content-range": `bytes ${start}-${body.length - 1}/${body.length}`,
      "content-length": body.length - start,
    });
    res.end(body.subarray(start));
    return;
  }
  res.writeHead(200, { "content-length": body.length });
  const drop = behaviour.dropAfter;
  if (drop !== undefined) {
    behaviour.dropAfter = undefined;
    res.write(body.subarray(0, drop), () => {
      setTimeout(() => res.socket?.destroy(), 20);
    });
    return;
  }
  res.end(body);
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "darkbloom-download-"));
  behaviour = {};
  ranges = [];
  server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/models/tiny.gguf`;
});
afterEach(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  await rm(dir, { recursive: true, force: true });
});

describe("downloadFile", () => {
  it("downloads, checks the hash and renames the file into place", async () => {
    const dest = join(dir, "tiny.gguf");
    const progress: DownloadProgress[] = [];
    const result = await downloadFile({ url, dest, sha256: SHA, onProgress: (p) => progress.push({ ...p }) });
    expect(result).toEqual({ path: dest, sizeBytes: CONTENT.length, sha256: SHA, resumedFrom: 0 });
    expect((await readFile(dest)).equals(CONTENT)).toBe(true);
    await expect(stat(`${dest}.partial`)).rejects.toThrow();
    expect(progress.at(-1)).toEqual({ received: CONTENT.length, total: CONTENT.length, resumedFrom: 0 });
    expect(ranges).toEqual([undefined]);
  });

  it("resumes an interrupted download with a Range request", async () => {
    const dest = join(dir, "tiny.gguf");
    behaviour.dropAfter = 100_000;
    const first = await downloadFile({ url, dest, sha256: SHA }).catch((e: unknown) => e);
    expect(first).toBeInstanceOf(DownloadError);
    expect((first as Error).message).toMatch(/run the command again to resume$/);
    const kept = (await stat(`${dest}.partial`)).size;
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThan(CONTENT.length);
    await expect(stat(dest)).rejects.toThrow();

    const result = await downloadFile({ url, dest, sha256: SHA });
    expect(result.resumedFrom).toBe(kept);
    expect(result.sha256).toBe(SHA);
    expect((await readFile(dest)).equals(CONTENT)).toBe(true);
    expect(ranges).toEqual([undefined, `bytes=${kept}-`]);
  });

  it("finishes a partial file that is already complete (416)", async () => {
    const dest = join(dir, "tiny.gguf");
    await writeFile(`${dest}.partial`, CONTENT);
    const result = await downloadFile({ url, dest, sha256: SHA });
    expect(result).toMatchObject({ sizeBytes: CONTENT.length, sha256: SHA, resumedFrom: CONTENT.length });
    expect((await readFile(dest)).equals(CONTENT)).toBe(true);
  });

  it("starts over when the server ignores the range", async () => {
    const dest = join(dir, "tiny.gguf");
    await writeFile(`${dest}.partial`, Buffer.from("garbage that is not the file"));
    behaviour.ignoreRange = true;
    const result = await downloadFile({ url, dest, sha256: SHA });
    expect(result.resumedFrom).toBe(0);
    expect((await readFile(dest)).equals(CONTENT)).toBe(true);
  });

  it("rejects a hash mismatch and deletes the download", async () => {
    const dest = join(dir, "tiny.gguf");
    const wrong = "0".repeat(64);
    const error = await downloadFile({ url, dest, sha256: wrong }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DownloadError);
    expect((error as Error).message).toBe(
      `SHA-256 mismatch: expected ${wrong}, got ${SHA}; the download was deleted`,
    );
    await expect(stat(dest)).rejects.toThrow();
    await expect(stat(`${dest}.partial`)).rejects.toThrow();
  });

  it("reports HTTP errors and unreachable servers", async () => {
    const dest = join(dir, "x.gguf");
    await expect(
      downloadFile({
        url: url.replace("/models/tiny.gguf", "/missing"),
        dest,
        fetch: async () => new Response("no", { status: 404, statusText: "Not Found" }),
      }),
    ).rejects.toThrow(/answered HTTP 404 Not Found$/);
    await expect(downloadFile({ url: "http://127.0.0.1:1/x.gguf", dest })).rejects.toThrow(
      /^cannot fetch http:\/\/127\.0\.0\.1:1\/x\.gguf/,
    );
  });

  it("runs the verify hook before the rename and deletes what fails it", async () => {
    const dest = join(dir, "tiny.gguf");
    const error = await downloadFile({
      url,
      dest,
      verify: async () => {
        throw new Error("not a GGUF file (bad magic)");
      },
    }).catch((e: unknown) => e);
    expect((error as Error).message).toBe(
      "the downloaded file is not usable: not a GGUF file (bad magic); it was deleted",
    );
    await expect(stat(dest)).rejects.toThrow();
    await expect(stat(`${dest}.partial`)).rejects.toThrow();
  });
});
