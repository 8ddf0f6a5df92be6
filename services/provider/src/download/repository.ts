import { createHash } from "node:crypto";
import { readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { sha256File } from "@darkbloom/models";
import { DownloadError, type DownloadProgress, downloadFile, fetchFollowing } from "./download.js";

/**
 * Multi-file model checkpoints from a Hugging Face-style hub (an MLX checkpoint is a repository:
 * config.json, the tokenizer's files, one or more .safetensors): every file of one commit of the
 * repository, resumable file by file, each checked against the hash the hub lists for it (SHA-256
 * for LFS files, the git blob SHA-1 for the others), with one progress figure over all of them.
 *
 * The hub's API (what huggingface_hub's model_info(files_metadata=True) reads):
 *   GET {endpoint}/api/models/{repo}/revision/{revision}?blobs=true
 *     → {"sha": commit, "siblings": [{"rfilename", "size", "blobId", "lfs"?: {"sha256", "size"}}]}
 *   GET {endpoint}/{repo}/resolve/{commit}/{path}   (LFS files redirect to a CDN that honours Range)
 * Files are fetched at the commit the listing named, never at a branch that may move meanwhile.
 */

/** The default hub; HF_ENDPOINT overrides it, as for huggingface_hub. */
export const DEFAULT_HUB = "https://huggingface.co";
/** Written last into the checkpoint directory: its presence means every file is complete and checked. */
export const CHECKPOINT_MANIFEST = "darkbloom-checkpoint.json";
/**
 * Present from the start of a download to its manifest: a directory holding it is a download under
 * way or interrupted, never a model (its files may be complete one by one and the checkpoint not).
 */
export const DOWNLOAD_MARKER = ".darkbloom-download";

const REPO = /^[A-Za-z0-9][A-Za-z0-9._-]{0,95}\/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$/;
const COMMIT = /^[0-9a-f]{40}$/;
const SEGMENT = /^[A-Za-z0-9._ +()@=,-]{1,255}$/;
/** A listing larger than this is not a model checkpoint. */
const MAX_FILES = 10_000;

export interface RepositoryFile {
  /** Path inside the repository (and the checkpoint directory), "/"-separated. */
  path: string;
  size: number;
  /** SHA-256 of an LFS file. */
  sha256?: string | undefined;
  /** Git blob SHA-1 of a file stored in git itself. */
  gitBlobSha1?: string | undefined;
}

export interface RepositoryPlan {
  repo: string;
  /** The commit the files are fetched at. */
  commit: string;
  files: RepositoryFile[];
  totalBytes: number;
}

/** Whether `value` names a hub repository ("owner/name"). */
export function isRepositoryId(value: string): boolean {
  return REPO.test(value) && !value.split("/").some((part) => part === "." || part === "..");
}

/** Lists one revision of a repository: its commit and every file with its size and hash. */
export async function planRepository(options: {
  repo: string;
  revision?: string;
  endpoint?: string;
  fetch?: typeof fetch;
  /** An access token (HF_TOKEN) for private and gated repositories: sent to the hub only. */
  token?: string | undefined;
}): Promise<RepositoryPlan> {
  const { repo } = options;
  if (!isRepositoryId(repo))
    throw new DownloadError(`${JSON.stringify(repo)} is not a repository id (owner/name)`);
  const endpoint = (options.endpoint ?? DEFAULT_HUB).replace(/\/+$/, "");
  const revision = options.revision ?? "main";
  const url = `${endpoint}/api/models/${repo}/revision/${encodeURIComponent(revision)}?blobs=true`;
  let response: Response;
  try {
    response = await fetchFollowing(options.fetch ?? globalThis.fetch, url, {
      authorization: options.token ? `Bearer ${options.token}` : undefined,
    });
  } catch (error) {
    throw new DownloadError(`cannot list ${repo}: ${(error as Error).message}`);
  }
  if (response.status === 401 || response.status === 404) {
    await response.body?.cancel();
    throw new DownloadError(
      options.token
        ? `${repo}@${revision} was not found on ${endpoint}, or HF_TOKEN does not give access to it`
        : `${repo}@${revision} was not found on ${endpoint} (private or gated ones need HF_TOKEN)`,
    );
  }
  if (response.status === 403) {
    await response.body?.cancel();
    throw new DownloadError(
      `${endpoint} refused ${repo}: a gated repository whose terms this account has not accepted, or a token without read access`,
    );
  }
  if (!response.ok) {
    await response.body?.cancel();
    throw new DownloadError(`listing ${repo} answered HTTP ${response.status}`);
  }
  const body = (await response.json().catch(() => undefined)) as
    | { sha?: unknown; siblings?: unknown }
    | undefined;
  if (!body || typeof body.sha !== "string" || !COMMIT.test(body.sha) || !Array.isArray(body.siblings)) {
    throw new DownloadError(`the listing of ${repo} is not a hub model listing (no commit or files)`);
  }
  if (body.siblings.length === 0 || body.siblings.length > MAX_FILES) {
    throw new DownloadError(`${repo} lists ${body.siblings.length} files`);
  }
  const files = body.siblings.map((entry, i) => repositoryFile(entry, `${repo} file ${i}`));
  return { repo, commit: body.sha, files, totalBytes: files.reduce((sum, f) => sum + f.size, 0) };
}

function repositoryFile(entry: unknown, where: string): RepositoryFile {
  const e = (entry ?? {}) as { rfilename?: unknown; size?: unknown; blobId?: unknown; lfs?: unknown };
  const path = e.rfilename;
  if (typeof path !== "string" || !safePath(path)) {
    throw new DownloadError(`${where} has a path this refuses to write: ${JSON.stringify(path)}`);
  }
  const lfs = e.lfs as { sha256?: unknown; size?: unknown } | undefined;
  const size = lfs?.size ?? e.size;
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) {
    throw new DownloadError(`${where} (${path}) has no size`);
  }
  if (lfs) {
    if (typeof lfs.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(lfs.sha256)) {
      throw new DownloadError(`${where} (${path}) is an LFS file without a SHA-256`);
    }
    return { path, size, sha256: lfs.sha256 };
  }
  if (typeof e.blobId !== "string" || !/^[0-9a-f]{40}$/.test(e.blobId)) {
    throw new DownloadError(`${where} (${path}) has no git blob id`);
  }
  return { path, size, gitBlobSha1: e.blobId };
}

/** Relative, "/"-separated, no "." or ".." segment, nothing a file system would read otherwise. */
function safePath(path: string): boolean {
  const parts = path.split("/");
  return (
    path.length <= 1024 &&
    parts.every((p) => SEGMENT.test(p) && p !== "." && p !== "..") &&
    path !== CHECKPOINT_MANIFEST &&
    path !== DOWNLOAD_MARKER &&
    !parts.some((p) => p.endsWith(".partial"))
  );
}

/** Git's blob id: SHA-1 over "blob <size>\0" and the content. */
export function gitBlobSha1(content: Uint8Array): string {
  return createHash("sha1").update(`blob ${content.length}\0`).update(content).digest("hex");
}

export interface RepositoryDownloadResult {
  dir: string;
  files: number;
  sizeBytes: number;
  /** Bytes already there from an earlier, interrupted run. */
  resumedBytes: number;
}

/**
 * Downloads every file of `plan` into `dir`, skipping files already complete and checked, resuming
 * a partial one, and writes CHECKPOINT_MANIFEST last. A file whose hash does not match is deleted and
 * the download stops naming it.
 */
export async function downloadRepository(options: {
  plan: RepositoryPlan;
  dir: string;
  endpoint?: string;
  fetch?: typeof fetch;
  onProgress?: (progress: DownloadProgress) => void;
  signal?: AbortSignal;
  /** As for planRepository: sent to the hub's origin only (its CDN redirects get none). */
  token?: string | undefined;
}): Promise<RepositoryDownloadResult> {
  const { plan, dir } = options;
  const endpoint = (options.endpoint ?? DEFAULT_HUB).replace(/\/+$/, "");
  await rm(join(dir, CHECKPOINT_MANIFEST), { force: true });
  await writeFile(
    join(dir, DOWNLOAD_MARKER),
    `${JSON.stringify({ repo: plan.repo, commit: plan.commit })}\n`,
  );
  let done = 0;
  let resumed = 0;
  const hashes: { path: string; size: number; sha256: string }[] = [];
  const report = (current: DownloadProgress | undefined) =>
    options.onProgress?.({
      received: done + (current?.received ?? 0),
      total: plan.totalBytes,
      resumedFrom: resumed + (current?.resumedFrom ?? 0),
    });
  for (const file of plan.files) {
    const dest = join(dir, ...file.path.split("/"));
    const complete = await completeFile(dest, file);
    if (complete) {
      done += file.size;
      resumed += file.size;
      hashes.push({ path: file.path, size: file.size, sha256: complete });
      report(undefined);
      continue;
    }
    const url = `${endpoint}/${plan.repo}/resolve/${plan.commit}/${file.path.split("/").map(encodeURIComponent).join("/")}`;
    const result = await downloadFile({
      url,
      dest,
      sha256: file.sha256,
      ...(file.gitBlobSha1 ? { verify: (path: string) => checkGitBlob(path, file) } : {}),
      onProgress: (p) => report(p),
      ...(options.fetch ? { fetch: options.fetch } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
      authorization: options.token ? `Bearer ${options.token}` : undefined,
    }).catch((error: unknown) => {
      throw error instanceof DownloadError ? new DownloadError(`${file.path}: ${error.message}`) : error;
    });
    if (result.sizeBytes !== file.size) {
      await rm(dest, { force: true });
      throw new DownloadError(
        `${file.path}: ${result.sizeBytes} bytes, the listing says ${file.size}; deleted`,
      );
    }
    done += file.size;
    resumed += result.resumedFrom;
    hashes.push({ path: file.path, size: file.size, sha256: result.sha256 });
    report(undefined);
  }
  const manifest = {
    format: "darkbloom.checkpoint.v1",
    repo: plan.repo,
    commit: plan.commit,
    files: hashes,
  };
  await writeFile(join(dir, CHECKPOINT_MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
  await rm(join(dir, DOWNLOAD_MARKER), { force: true });
  return { dir, files: plan.files.length, sizeBytes: plan.totalBytes, resumedBytes: resumed };
}

/** The file's SHA-256 when it is already there, whole and matching the listing's hash. */
async function completeFile(path: string, file: RepositoryFile): Promise<string | undefined> {
  const size = await stat(path).then(
    (s) => (s.isFile() ? s.size : -1),
    () => -1,
  );
  if (size !== file.size) return undefined;
  const sha256 = await sha256File(path);
  if (file.sha256 !== undefined) return sha256 === file.sha256 ? sha256 : undefined;
  const ok = await checkGitBlob(path, file).then(
    () => true,
    () => false,
  );
  return ok ? sha256 : undefined;
}

async function checkGitBlob(path: string, file: RepositoryFile): Promise<void> {
  // Files kept in git rather than LFS are small (configuration, tokenizer files).
  const got = gitBlobSha1(await readFile(path));
  if (got !== file.gitBlobSha1) {
    throw new Error(`git blob ${got}, the listing says ${file.gitBlobSha1}`);
  }
}
