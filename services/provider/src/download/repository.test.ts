import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DownloadError, type DownloadProgress } from "./download.js";
import {
  CHECKPOINT_MANIFEST,
  DOWNLOAD_MARKER,
  downloadRepository,
  gitBlobSha1,
  isRepositoryId,
  planRepository,
} from "./repository.js";

const COMMIT = "0123456789abcdef0123456789abcdef01234567";

interface HubFile {
  path: string;
  body: Buffer;
  lfs: boolean;
}

/**
 * A hub as huggingface.co answers: the listing with blobs, `resolve` at a commit, LFS files redirected
 * to a CDN path that honours Range. `dropAfter` cuts the first CDN response of a file after that
 * many bytes; `tamper` serves other bytes than the listing's hash says.
 */
class FakeHub {
  server!: Server;
  url!: string;
  requests: { path: string; range: string | undefined; host: string; authorization: string | undefined }[] =
    [];
  /** Where LFS files redirect: this server by default, or another origin (a CDN) that reaches it. */
  cdnOrigin = "";
  /** A gated repository: the listing and `resolve` answer 401 without this bearer token. */
  token: string | undefined;
  dropAfter = new Map<string, number>();
  tamper = new Set<string>();
  siblings: unknown[] | undefined;

  constructor(
    readonly repo: string,
    readonly files: HubFile[],
  ) {}

  async start(): Promise<void> {
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
    this.requests.push({
      path,
      range: req.headers.range,
      host: req.headers.host ?? "",
      authorization: req.headers.authorization,
    });
    const gated = this.token !== undefined && !path.startsWith("/cdn/");
    if (gated && req.headers.authorization !== `Bearer ${this.token}`) {
      res.writeHead(401, { "content-type": "application/json" });
      res.end('{"error":"Access to model is restricted."}');
      return;
    }
    if (path === `/api/models/${this.repo}/revision/main`) {
      const siblings =
        this.siblings ??
        this.files.map((f) =>
          f.lfs
            ? {
                rfilename: f.path,
                size: f.body.length,
                blobId: "f".repeat(40),
                lfs: {
                  sha256: createHash("sha256").update(f.body).digest("hex"),
                  size: f.body.length,
                  pointerSize: 134,
                },
              }
            : { rfilename: f.path, size: f.body.length, blobId: gitBlobSha1(f.body) },
        );
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ id: this.repo, sha: COMMIT, siblings }));
      return;
    }
    const resolve = `/${this.repo}/resolve/${COMMIT}/`;
    const file = this.files.find((f) => path === `${resolve}${f.path}` || path === `/cdn/${f.path}`);
    if (!file) {
      res.writeHead(404);
      res.end();
      return;
    }
    if (file.lfs && path.startsWith(resolve)) {
      res.writeHead(302, { location: `${this.cdnOrigin}/cdn/${file.path}` });
      res.end();
      return;
    }
    const body = this.tamper.has(file.path) ? Buffer.from(file.body).fill(7, 0, 1) : file.body;
    const start = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? "")?.[1] ?? 0);
    const headers =
      start > 0
        ? {
            "content-range": `bytes ${start}-${body.length - 1}/${body.length}`,
            "content-length": body.length - start,
          }
        : { "content-length": body.length };
    res.writeHead(start > 0 ? 206 : 200, headers);
    const drop = this.dropAfter.get(file.path);
    if (drop !== undefined) {
      this.dropAfter.delete(file.path);
      res.write(body.subarray(start, start + drop), () => res.destroy());
      return;
    }
    res.end(body.subarray(start));
  }
}

const REPO = "mlx-community/Tiny-Model-4bit";
const FILES: HubFile[] = [
  { path: "config.json", body: Buffer.from('{"model_type":"qwen3"}\n'), lfs: false },
  { path: "model.safetensors", body: randomBytes(400_000), lfs: true },
  { path: "tokenizer/tokenizer.json", body: Buffer.from('{"version":"1.0"}'), lfs: false },
];

let hub: FakeHub;
let dir: string;

beforeEach(async () => {
  hub = new FakeHub(REPO, FILES);
  await hub.start();
  dir = await mkdtemp(join(tmpdir(), "darkbloom-checkpoint-"));
});
afterEach(async () => {
  await hub.stop();
  await rm(dir, { recursive: true, force: true });
});

describe("a hub repository as a checkpoint", () => {
  it("downloads every file at the listed commit, checks each hash, and writes the manifest last", async () => {
    const plan = await planRepository({ repo: REPO, endpoint: hub.url });
    expect(plan).toMatchObject({ commit: COMMIT, totalBytes: FILES.reduce((s, f) => s + f.body.length, 0) });
    const progress: DownloadProgress[] = [];
    const result = await downloadRepository({
      plan,
      dir,
      endpoint: hub.url,
      onProgress: (p) => progress.push(p),
    });
    expect(result).toMatchObject({ files: 3, sizeBytes: plan.totalBytes, resumedBytes: 0 });
    for (const f of FILES)
      expect((await readFile(join(dir, ...f.path.split("/")))).equals(f.body)).toBe(true);
    // Fetched at the commit, never at the branch that may move.
    expect(
      hub.requests.filter((r) => r.path.includes("/resolve/")).every((r) => r.path.includes(COMMIT)),
    ).toBe(true);
    // One progress figure over all the files, never going back.
    expect(progress.every((p) => p.total === plan.totalBytes)).toBe(true);
    expect(progress.map((p) => p.received)).toEqual(
      [...progress.map((p) => p.received)].sort((a, b) => a - b),
    );
    expect(progress.at(-1)?.received).toBe(plan.totalBytes);
    const manifest = JSON.parse(await readFile(join(dir, CHECKPOINT_MANIFEST), "utf8"));
    expect(manifest).toMatchObject({ format: "darkbloom.checkpoint.v1", repo: REPO, commit: COMMIT });
    expect(manifest.files).toHaveLength(3);
  });

  it("resumes an interrupted download where it stopped and skips the files already complete", async () => {
    hub.dropAfter.set("model.safetensors", 150_000);
    const plan = await planRepository({ repo: REPO, endpoint: hub.url });
    const first = await downloadRepository({ plan, dir, endpoint: hub.url }).catch((e: unknown) => e);
    expect(first).toBeInstanceOf(DownloadError);
    expect((first as Error).message).toMatch(
      /^model\.safetensors: download interrupted .*run the command again/,
    );
    await expect(stat(join(dir, CHECKPOINT_MANIFEST))).rejects.toThrow();
    // Marked as a download under way, so that the inventory does not take it for a model.
    expect(JSON.parse(await readFile(join(dir, DOWNLOAD_MARKER), "utf8"))).toEqual({
      repo: REPO,
      commit: COMMIT,
    });
    hub.requests = [];
    const second = await downloadRepository({ plan, dir, endpoint: hub.url });
    await expect(stat(join(dir, DOWNLOAD_MARKER))).rejects.toThrow();
    // What the cut left on disk: up to the 150,000 bytes sent (the client may not have read them all
    // before the connection went), asked again from where it stopped; config.json was complete.
    const kept = second.resumedBytes - (FILES[0]?.body.length ?? 0);
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThanOrEqual(150_000);
    expect(hub.requests.some((r) => r.path.endsWith("config.json"))).toBe(false);
    expect(hub.requests.find((r) => r.path === "/cdn/model.safetensors")?.range).toBe(`bytes=${kept}-`);
    expect((await readFile(join(dir, "model.safetensors"))).equals(FILES[1]?.body ?? Buffer.alloc(0))).toBe(
      true,
    );
  });

  it("deletes a file whose bytes are not what the listing's hash says, and names it", async () => {
    const plan = await planRepository({ repo: REPO, endpoint: hub.url });
    for (const path of ["config.json", "model.safetensors"]) {
      hub.tamper = new Set([path]);
      const error = await downloadRepository({ plan, dir, endpoint: hub.url }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(DownloadError);
      expect((error as Error).message.startsWith(`${path}: `)).toBe(true);
      await expect(stat(join(dir, path))).rejects.toThrow();
      await expect(stat(join(dir, `${path}.partial`))).rejects.toThrow();
    }
  });

  it("refuses listings that would write outside the checkpoint or cannot be checked", async () => {
    const bad: [unknown, RegExp][] = [
      [{ rfilename: "../evil", size: 1, blobId: "a".repeat(40) }, /refuses to write/],
      [{ rfilename: "/etc/passwd", size: 1, blobId: "a".repeat(40) }, /refuses to write/],
      [{ rfilename: "a/./b", size: 1, blobId: "a".repeat(40) }, /refuses to write/],
      [{ rfilename: CHECKPOINT_MANIFEST, size: 1, blobId: "a".repeat(40) }, /refuses to write/],
      [{ rfilename: DOWNLOAD_MARKER, size: 1, blobId: "a".repeat(40) }, /refuses to write/],
      [
        { rfilename: "w.safetensors", size: 5, blobId: "a".repeat(40), lfs: { size: 5 } },
        /without a SHA-256/,
      ],
      [{ rfilename: "c.json", size: 5 }, /no git blob id/],
      [{ rfilename: "c.json", blobId: "a".repeat(40) }, /no size/],
    ];
    for (const [sibling, message] of bad) {
      hub.siblings = [sibling];
      await expect(planRepository({ repo: REPO, endpoint: hub.url })).rejects.toThrow(message);
    }
    await expect(planRepository({ repo: "nobody/nothing", endpoint: hub.url })).rejects.toThrow(
      /nobody\/nothing@main was not found/,
    );
    await expect(planRepository({ repo: "../x", endpoint: hub.url })).rejects.toThrow(/not a repository id/);
  });

  it("sends the token to the hub only: its CDN (another origin) never sees it; without one a gated repository is refused", async () => {
    hub.token = "hf_secret";
    hub.cdnOrigin = hub.url.replace("127.0.0.1", "localhost");
    await expect(planRepository({ repo: REPO, endpoint: hub.url })).rejects.toThrow(
      `${REPO}@main was not found on ${hub.url} (private or gated ones need HF_TOKEN)`,
    );
    await expect(planRepository({ repo: REPO, endpoint: hub.url, token: "hf_wrong" })).rejects.toThrow(
      "or HF_TOKEN does not give access to it",
    );
    hub.requests = [];
    const plan = await planRepository({ repo: REPO, endpoint: hub.url, token: "hf_secret" });
    await downloadRepository({ plan, dir, endpoint: hub.url, token: "hf_secret" });
    for (const f of FILES)
      expect((await readFile(join(dir, ...f.path.split("/")))).equals(f.body)).toBe(true);
    const cdn = hub.requests.filter((r) => r.path.startsWith("/cdn/"));
    expect(cdn.map((r) => r.host)).toEqual([new URL(hub.cdnOrigin).host]);
    expect(cdn.every((r) => r.authorization === undefined)).toBe(true);
    const toHub = hub.requests.filter((r) => !r.path.startsWith("/cdn/"));
    expect(toHub.length).toBe(1 + FILES.length);
    expect(toHub.every((r) => r.authorization === "Bearer hf_secret")).toBe(true);
  });

  it("tells repository ids from paths and URLs", () => {
    expect(isRepositoryId("mlx-community/Qwen3-0.6B-4bit")).toBe(true);
    for (const not of ["Qwen3", "a/b/c", "../b", "a/..", "https://x/y", "/abs/path", "a b/c"]) {
      expect(isRepositoryId(not), not).toBe(false);
    }
  });
});
