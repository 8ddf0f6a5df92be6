import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  randomUUID,
} from "node:crypto";
import { chmod, mkdir, open, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { BoxKeyPair, wipe } from "@darkbloom/protocol/sealed-box";
import { DataDirLayout } from "../config/paths.js";

/** The provider's X25519 key pair: requests are sealed to `publicKey` (32 raw bytes). */
export interface EncryptionKeyPair {
  publicKey: Uint8Array;
  privateKey: KeyObject;
  /** The same key for NaCl boxes, its secret in sodium secure memory: opens requests, seals chunks. */
  box: BoxKeyPair;
  /** The PEM file holding the private key (mode 0600). */
  path: string;
}

/** The installation's identity, kept in the data directory across restarts. */
export interface ProviderIdentity {
  machineId: string;
  encryptionKey: EncryptionKeyPair;
}

export async function loadOrCreateIdentity(dataDir: string): Promise<ProviderIdentity> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const [machineId, encryptionKey] = await Promise.all([
    loadOrCreateMachineId(join(dataDir, DataDirLayout.machineId)),
    loadOrCreateEncryptionKey(join(dataDir, DataDirLayout.encryptionKey)),
  ]);
  return { machineId, encryptionKey };
}

/** The raw 32-byte X25519 public key of a key object. */
export function rawX25519PublicKey(key: KeyObject): Uint8Array {
  const jwk = (key.type === "private" ? createPublicKey(key) : key).export({ format: "jwk" });
  if (jwk.crv !== "X25519" || typeof jwk.x !== "string") throw new Error("not an X25519 key");
  const raw = Buffer.from(jwk.x, "base64url");
  if (raw.length !== 32) throw new Error(`X25519 public key has ${raw.length} bytes`);
  return new Uint8Array(raw);
}

/** The libsodium key pair of an X25519 private key object (its raw secret copied to secure memory). */
export function boxKeyPairOf(privateKey: KeyObject): BoxKeyPair {
  const jwk = privateKey.export({ format: "jwk" });
  if (jwk.crv !== "X25519" || typeof jwk.d !== "string") throw new Error("not an X25519 private key");
  const secret = Buffer.from(jwk.d, "base64url");
  try {
    return BoxKeyPair.fromSecretKey(secret);
  } finally {
    wipe(secret);
  }
}

/**
 * The X25519 private key in `path` (PKCS#8 PEM, mode 0600), generated on first use. A file that
 * exists but does not hold an X25519 key is an error, never silently replaced: the key is the
 * provider's encryption identity.
 */
export async function loadOrCreateEncryptionKey(path: string): Promise<EncryptionKeyPair> {
  const existing = await readIfExists(path);
  if (existing !== undefined) {
    let privateKey: KeyObject;
    try {
      privateKey = createPrivateKey(existing);
    } catch (error) {
      throw new Error(`${path} does not hold a private key: ${(error as Error).message}`);
    }
    if (privateKey.asymmetricKeyType !== "x25519") {
      throw new Error(`${path} holds a ${privateKey.asymmetricKeyType} key, expected x25519`);
    }
    if (((await stat(path)).mode & 0o077) !== 0) await chmod(path, 0o600);
    return { publicKey: rawX25519PublicKey(privateKey), privateKey, box: boxKeyPairOf(privateKey), path };
  }
  const { privateKey } = generateKeyPairSync("x25519");
  const pem = privateKey.export({ format: "pem", type: "pkcs8" }).toString();
  if (!(await createExclusive(path, pem))) return loadOrCreateEncryptionKey(path); // lost a race: read theirs
  return { publicKey: rawX25519PublicKey(privateKey), privateKey, box: boxKeyPairOf(privateKey), path };
}

async function loadOrCreateMachineId(path: string): Promise<string> {
  const existing = (await readIfExists(path))?.trim();
  if (existing && /^[A-Za-z0-9._-]{1,128}$/.test(existing)) return existing;
  const id = `dbp-${randomUUID()}`;
  if (existing === undefined) {
    if (!(await createExclusive(path, `${id}\n`))) return loadOrCreateMachineId(path);
  } else {
    const handle = await open(path, "w", 0o600);
    await handle.writeFile(`${id}\n`);
    await handle.close();
  }
  return id;
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
}

/** Creates `path` with `content` (mode 0600) unless it exists; false when it did. */
async function createExclusive(path: string, content: string): Promise<boolean> {
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(path, "wx", 0o600);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw error;
  }
  try {
    await handle.writeFile(content);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await chmod(path, 0o600); // the umask may have narrowed it further; never wider
  return true;
}
