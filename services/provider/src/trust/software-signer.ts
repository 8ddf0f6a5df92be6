import { createPrivateKey, generateKeyPairSync, type KeyObject, sign } from "node:crypto";
import { chmod, lstat, mkdir, open, readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { rawP256PublicKey } from "@darkbloom/protocol";
import { DataDirLayout } from "../config/paths.js";
import { AttestationKeyError, type AttestationSigner } from "./signer.js";

/** `<dataDir>/keys/attestation.pem`. */
export function attestationKeyPath(dataDir: string): string {
  return join(dataDir, DataDirLayout.attestationKey);
}

/**
 * A P-256 key held in software: persistent in a PKCS#8 PEM file (Linux and development), or
 * ephemeral in memory (a fallback). Trusted as self_signed by the coordinator.
 */
export class SoftwareSigner implements AttestationSigner {
  readonly kind = "software" as const;
  private readonly raw: Uint8Array;

  private constructor(
    private readonly key: KeyObject,
    readonly persistent: boolean,
    /** The PEM file, for a persistent key. */
    readonly path: string | undefined,
  ) {
    this.raw = rawP256PublicKey(key);
  }

  /**
   * The key in `<dataDir>/keys/attestation.pem`, created on first use. The directory must be mode
   * 0700 and the file 0600, both owned by this user and not symbolic links; anything else is refused
   * with an AttestationKeyError saying how to fix it (the key is never silently replaced or loosened).
   */
  static async loadOrCreate(dataDir: string): Promise<SoftwareSigner> {
    const path = attestationKeyPath(dataDir);
    const dir = dirname(path);
    await ensurePrivateDir(dir);
    const existing = await checkedRead(path);
    if (existing !== undefined) return new SoftwareSigner(parseKey(existing, path), true, path);
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
    const pem = privateKey.export({ format: "pem", type: "pkcs8" }).toString();
    let handle: Awaited<ReturnType<typeof open>>;
    try {
      handle = await open(path, "wx", 0o600);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "EEXIST") return SoftwareSigner.loadOrCreate(dataDir);
      throw error;
    }
    try {
      await handle.writeFile(pem);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await chmod(path, 0o600);
    return new SoftwareSigner(privateKey, true, path);
  }

  /** A key that lives only in this process. */
  static ephemeral(): SoftwareSigner {
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
    return new SoftwareSigner(privateKey, false, undefined);
  }

  /** A signer for a given PKCS#8 PEM (tests, fixed keys). */
  static fromPem(pem: string, persistent = true): SoftwareSigner {
    return new SoftwareSigner(parseKey(pem, "the given PEM"), persistent, undefined);
  }

  publicKey(): Uint8Array {
    return this.raw;
  }

  async sign(data: Uint8Array): Promise<Uint8Array> {
    return new Uint8Array(sign("sha256", data, { key: this.key, dsaEncoding: "der" }));
  }
}

function parseKey(pem: string, where: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch (error) {
    throw new AttestationKeyError(`${where} does not hold a private key: ${(error as Error).message}`);
  }
  if (key.asymmetricKeyType !== "ec" || key.asymmetricKeyDetails?.namedCurve !== "prime256v1") {
    throw new AttestationKeyError(
      `${where} holds a ${key.asymmetricKeyType} key, expected a P-256 (prime256v1) key`,
    );
  }
  return key;
}

const uid = (): number | undefined => process.getuid?.();

/** Creates `dir` as 0700, or checks that an existing one is a private directory of this user. */
async function ensurePrivateDir(dir: string): Promise<void> {
  const existing = await lstatIfExists(dir);
  if (existing === undefined) {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await chmod(dir, 0o700); // whatever the umask did
    return;
  }
  if (existing.isSymbolicLink())
    throw new AttestationKeyError(`${dir} is a symbolic link; it must be a directory`);
  if (!existing.isDirectory()) throw new AttestationKeyError(`${dir} is not a directory`);
  checkOwnerAndMode(dir, existing, 0o700, "directory");
}

/** Reads the key file after checking it: a regular file of this user, mode 0600 or stricter. */
async function checkedRead(path: string): Promise<string | undefined> {
  const info = await lstatIfExists(path);
  if (info === undefined) return undefined;
  if (info.isSymbolicLink())
    throw new AttestationKeyError(`${path} is a symbolic link; it must be a regular file`);
  if (!info.isFile()) throw new AttestationKeyError(`${path} is not a regular file`);
  checkOwnerAndMode(path, info, 0o600, "file");
  return readFile(path, "utf8");
}

function checkOwnerAndMode(
  path: string,
  info: { uid: number; mode: number },
  wanted: number,
  what: "file" | "directory",
): void {
  const me = uid();
  if (me !== undefined && info.uid !== me) {
    throw new AttestationKeyError(
      `the attestation key ${what} ${path} is owned by uid ${info.uid}, not by this user (uid ${me}); ` +
        `it must belong to the user the daemon runs as`,
    );
  }
  const mode = info.mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new AttestationKeyError(
      `the attestation key ${what} ${path} is accessible to group or others (mode ${mode.toString(8).padStart(4, "0")}); ` +
        `run: chmod ${wanted.toString(8)} ${path}`,
    );
  }
}

async function lstatIfExists(path: string) {
  try {
    return await lstat(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
}
