import { createHash, createPrivateKey, X509Certificate } from "node:crypto";
import { type FSWatcher, watch } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname } from "node:path";
import { createSecureContext } from "node:tls";
import type { Logger } from "../log.js";

/** Where the serving certificate chain and its private key are kept (PEM files). */
export interface CertificateFiles {
  certFile: string;
  keyFile: string;
}

/** A certificate chain and its private key, as the TLS server takes them. */
export interface CertificatePair {
  cert: Buffer;
  key: Buffer;
}

/** A pair that was checked, with what identifies its certificate in logs (never anything of the key). */
export interface LoadedCertificate extends CertificatePair {
  serial: string;
  fingerprint256: string;
  validTo: string;
}

/** A certificate or key that cannot be used; the message names the file and why, never the key. */
export class CertificateError extends Error {
  override readonly name = "CertificateError";
}

/** Reads and checks the pair: both files readable, the certificate parses, the key is its key. */
export async function loadCertificate(files: CertificateFiles): Promise<LoadedCertificate> {
  return checkPair(await readPair(files), files);
}

async function readPair(files: CertificateFiles): Promise<CertificatePair> {
  const read = async (file: string, what: string) => {
    try {
      return await readFile(file);
    } catch (e) {
      throw new CertificateError(
        `cannot read the TLS ${what} ${file} (${(e as NodeJS.ErrnoException).code})`,
      );
    }
  };
  return { cert: await read(files.certFile, "certificate"), key: await read(files.keyFile, "key") };
}

function checkPair(pair: CertificatePair, files: CertificateFiles): LoadedCertificate {
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(pair.cert);
  } catch {
    throw new CertificateError(`${files.certFile} is not a PEM certificate`);
  }
  let key: ReturnType<typeof createPrivateKey>;
  try {
    key = createPrivateKey(pair.key);
  } catch {
    // OpenSSL's reason is not quoted: it is about the key's bytes.
    throw new CertificateError(`${files.keyFile} is not an unencrypted PEM private key`);
  }
  if (!x509.checkPrivateKey(key)) {
    throw new CertificateError(
      `the key in ${files.keyFile} is not the key of the certificate in ${files.certFile}`,
    );
  }
  try {
    // What the server will do with it: the rest of the chain must parse too.
    createSecureContext(pair);
  } catch (e) {
    throw new CertificateError(`${files.certFile} cannot be served: ${(e as Error).message}`);
  }
  return { ...pair, serial: x509.serialNumber, fingerprint256: x509.fingerprint256, validTo: x509.validTo };
}

export interface CertificateWatchOptions {
  /** The files are read again this often whatever the watcher saw (default 30 s). */
  checkIntervalMs?: number;
  /** After a change is seen, how long to wait for the rest of an update (default 200 ms). */
  settleMs?: number;
}

/**
 * Reloads the serving certificate when its files change, without a restart: cert-manager and
 * Kubernetes Secret volumes replace them by swapping a symlink in their directory, which a watch of
 * the files themselves would miss, so their directories are watched, and the files are read again
 * every `checkIntervalMs` as well (a watch can miss events, e.g. on network file systems). A changed
 * pair that checks out is handed to `onReload` (new connections get it; open ones keep theirs); one
 * that does not is logged once and the current pair kept.
 */
export class CertificateReloader {
  private current: LoadedCertificate;
  private readonly watchers: FSWatcher[] = [];
  private interval: NodeJS.Timeout | undefined;
  private settle: NodeJS.Timeout | undefined;
  private checking: Promise<void> | undefined;
  private checkAgain = false;
  /** What the last refused pair was (its digest and the reason): a refusal is logged once, not every check. */
  private refused: string | undefined;
  private stopped = false;

  constructor(
    private readonly files: CertificateFiles,
    initial: LoadedCertificate,
    private readonly onReload: (certificate: LoadedCertificate) => void,
    private readonly log: Logger,
    private readonly options: CertificateWatchOptions = {},
  ) {
    this.current = initial;
  }

  start(): void {
    for (const dir of new Set([dirname(this.files.certFile), dirname(this.files.keyFile)])) {
      try {
        const watcher = watch(dir, { persistent: false }, () => this.changed());
        watcher.on("error", (e) =>
          this.log.warn({ dir, err: e.message }, "watching the TLS certificate's directory failed"),
        );
        this.watchers.push(watcher);
      } catch (e) {
        this.log.warn({ dir, err: (e as Error).message }, "cannot watch the TLS certificate's directory");
      }
    }
    this.interval = setInterval(() => void this.check(), this.options.checkIntervalMs ?? 30_000);
    this.interval.unref();
  }

  stop(): void {
    this.stopped = true;
    for (const w of this.watchers.splice(0)) w.close();
    clearInterval(this.interval);
    clearTimeout(this.settle);
  }

  /** Reads the files again; a changed pair that checks out replaces the current one. */
  check(): Promise<void> {
    if (this.checking) {
      this.checkAgain = true; // the files may have changed after the read in flight
      return this.checking;
    }
    this.checking = this.reload().finally(() => {
      this.checking = undefined;
      if (this.checkAgain && !this.stopped) {
        this.checkAgain = false;
        void this.check();
      }
    });
    return this.checking;
  }

  /** A watch event: an update (several renames, or a file written in parts) is read once it settled. */
  private changed(): void {
    clearTimeout(this.settle);
    this.settle = setTimeout(() => void this.check(), this.options.settleMs ?? 200);
    this.settle.unref();
  }

  private async reload(): Promise<void> {
    let pair: CertificatePair | undefined;
    let next: LoadedCertificate;
    try {
      pair = await readPair(this.files);
      if (pair.cert.equals(this.current.cert) && pair.key.equals(this.current.key)) {
        this.refused = undefined;
        return;
      }
      next = checkPair(pair, this.files);
    } catch (e) {
      const reason = (e as Error).message;
      const refused = pair ? `${digest(pair)} ${reason}` : reason;
      if (refused !== this.refused && !this.stopped) {
        this.refused = refused;
        this.log.warn(
          { certFile: this.files.certFile, err: reason, serial: this.current.serial },
          "TLS certificate not reloaded: serving the current one",
        );
      }
      return;
    }
    if (this.stopped) return;
    this.refused = undefined;
    this.current = next;
    this.onReload(next);
    this.log.info(
      {
        certFile: this.files.certFile,
        serial: next.serial,
        fingerprint256: next.fingerprint256,
        validTo: next.validTo,
      },
      "TLS certificate reloaded",
    );
  }
}

function digest(pair: CertificatePair): string {
  return createHash("sha256").update(pair.cert).update(pair.key).digest("hex");
}
