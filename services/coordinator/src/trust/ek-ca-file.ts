import { readFileSync, statSync } from "node:fs";
import type { Logger } from "../log.js";
import { EkTrustStore } from "./tpm/index.js";

export interface EkCaFileOptions {
  /** How often the file's modification time is looked at, at most (default 10 s). */
  checkEveryMs?: number;
  /** Told after a changed bundle was loaded. */
  onChange?: () => void;
  now?: () => number;
}

/**
 * The EK CA bundle of `--tpm-ek-ca`, re-read when the file changes (a ConfigMap mounted as a
 * directory is replaced in place by the kubelet): adding a TPM vendor's CA takes effect without a
 * restart. The file is checked at most every 10 s, when a registration or the trust manager's timer
 * asks for the store, and whoever must re-judge what the old bundle decided is told. A file
 * that stops parsing, or disappears, keeps the last good store, with a warning: a half-written update
 * must not stop every TPM provider from earning its level.
 */
export class EkCaFile {
  private store: EkTrustStore;
  private mtimeMs: number;
  private checkedAt: number;

  /** Reads the file now; throws when it cannot be read or holds no usable certificate. */
  private readonly now: () => number;
  private readonly checkEveryMs: number;

  constructor(
    readonly path: string,
    private readonly log: Logger,
    private readonly options: EkCaFileOptions = {},
  ) {
    this.now = options.now ?? Date.now;
    this.checkEveryMs = options.checkEveryMs ?? 10_000;
    this.mtimeMs = statSync(path).mtimeMs;
    this.store = EkTrustStore.fromPem(readFileSync(path, "utf8"));
    this.checkedAt = this.now();
  }

  /** The current store. */
  current(): EkTrustStore {
    const now = this.now();
    if (now - this.checkedAt < this.checkEveryMs) return this.store;
    this.checkedAt = now;
    try {
      const mtimeMs = statSync(this.path).mtimeMs;
      if (mtimeMs === this.mtimeMs) return this.store;
      const store = EkTrustStore.fromPem(readFileSync(this.path, "utf8"));
      this.mtimeMs = mtimeMs;
      this.store = store;
      this.log.info({ path: this.path, certificates: store.size }, "TPM EK CA bundle reloaded");
      this.options.onChange?.();
    } catch (error) {
      this.log.warn(
        { path: this.path, err: (error as Error).message },
        "the TPM EK CA bundle could not be reloaded; keeping the last one",
      );
    }
    return this.store;
  }
}
