import { createRequire } from "node:module";
import type { Logger } from "pino";
import type { AttestationSigner } from "./signer.js";
import { SoftwareSigner } from "./software-signer.js";

/**
 * The keychain part of the native addon (native/, macOS only), as the daemon calls it. The addon
 * wraps the Security framework the way reference/001 (PR #146) describes:
 *
 * - `loadOrCreatePersistentKey` finds, or creates once, a Secure Enclave P-256 key with
 *   `kSecAttrTokenIDSecureEnclave`, `kSecAttrIsPermanent: true`, `kSecUseDataProtectionKeychain: true`
 *   (on every create, query and delete: without it the access group is silently ignored),
 *   `kSecAttrAccessGroup: <team>.io.darkbloom.provider` and `kSecAttrLabel: <label>`. Only binaries
 *   signed by the team (with the `com.apple.security.keychain-access-groups` entitlement) can use it;
 *   the private key never leaves the enclave. It looks up first and creates only when the lookup
 *   says "not found"; every other lookup failure is thrown, never papered over by a second key.
 * - `createEphemeralKey` makes a Secure Enclave key that is not stored (lost at exit).
 * - Errors carry `code`: "missing_entitlement" (errSecMissingEntitlement, -34018: an ad-hoc or
 *   foreign-team signature), "unavailable" (no Secure Enclave: Intel without T2, most VMs),
 *   "interaction_not_allowed" / "auth_failed" (keychain locked), or "other".
 */
export interface KeychainAddon {
  /** A real Secure Enclave probe (CryptoKit SecureEnclave.isAvailable), not an OS version check. */
  secureEnclaveAvailable(): boolean;
  loadOrCreatePersistentKey(options: { accessGroup: string; label: string }): Promise<NativeEnclaveKey>;
  createEphemeralKey(): Promise<NativeEnclaveKey>;
}

/** A Secure Enclave key handle from the addon. */
export interface NativeEnclaveKey {
  /** SEC1 uncompressed P-256 point (65 bytes). */
  publicKey(): Uint8Array;
  /** ECDSA-SHA256 over data, DER encoded, computed inside the enclave. */
  sign(data: Uint8Array): Promise<Uint8Array>;
}

export type KeychainErrorCode =
  | "missing_entitlement"
  | "unavailable"
  | "interaction_not_allowed"
  | "auth_failed"
  | "other";

/** An error from the keychain addon. */
export class KeychainError extends Error {
  override readonly name = "KeychainError";

  constructor(
    readonly code: KeychainErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** The team-scoped keychain access group of the production signing identity. */
export const DEFAULT_ACCESS_GROUP = "SLDQ2GJ6TL.io.darkbloom.provider";
/** The key's label; the version suffix leaves room for a rotation to v2. */
export const DEFAULT_KEY_LABEL = "io.darkbloom.provider.attestation-signing.v1";

/** A signer whose key lives in the Secure Enclave. */
export class SecureEnclaveSigner implements AttestationSigner {
  readonly kind = "secure_enclave" as const;
  private readonly raw: Uint8Array;

  constructor(
    private readonly key: NativeEnclaveKey,
    readonly persistent: boolean,
  ) {
    const raw = key.publicKey();
    if (raw.length !== 65 || raw[0] !== 0x04) {
      throw new KeychainError("other", `the enclave returned a ${raw.length}-byte public key, expected 65`);
    }
    this.raw = raw;
  }

  publicKey(): Uint8Array {
    return this.raw;
  }

  sign(data: Uint8Array): Promise<Uint8Array> {
    return this.key.sign(data);
  }
}

export interface SignerFactoryOptions {
  /** For the software key file. */
  dataDir: string;
  platform?: NodeJS.Platform;
  /**
   * The keychain addon; by default loaded from the native package on macOS (undefined when it is
   * not installed, as on every machine here).
   */
  addon?: KeychainAddon | undefined;
  /**
   * The keychain access group. DARKBLOOM_KEYCHAIN_ACCESS_GROUP overrides it for development only: in
   * production the entitlement decides which group the binary may use, whatever is asked for.
   */
  accessGroup?: string;
  label?: string;
  logger?: Logger;
}

/**
 * The attestation signer for this machine:
 *
 * 1. macOS with the keychain addon and a Secure Enclave: the persistent enclave key in the
 *    data-protection keychain under the team access group (trust: self_signed, or hardware once the
 *    key is enrolled with the coordinator);
 * 2. if that fails (missing entitlement on an unsigned or re-signed build, locked keychain…): an
 *    ephemeral enclave key, with a warning; it is reported as not persistent, which the coordinator
 *    never trusts above self_signed;
 * 3. otherwise (Linux, no addon, no enclave, or the enclave fails entirely): the software key in
 *    `<dataDir>/keys/attestation.pem` (self_signed). Its permission errors are thrown, not bypassed.
 */
export async function createAttestationSigner(options: SignerFactoryOptions): Promise<AttestationSigner> {
  const platform = options.platform ?? process.platform;
  const log = options.logger;
  const addon = options.addon ?? (platform === "darwin" ? loadKeychainAddon() : undefined);
  if (platform === "darwin" && addon?.secureEnclaveAvailable()) {
    const accessGroup =
      options.accessGroup ?? (process.env.DARKBLOOM_KEYCHAIN_ACCESS_GROUP || DEFAULT_ACCESS_GROUP);
    const label = options.label ?? DEFAULT_KEY_LABEL;
    try {
      const key = await addon.loadOrCreatePersistentKey({ accessGroup, label });
      log?.info({ accessGroup }, "attestation key: persistent Secure Enclave key");
      return new SecureEnclaveSigner(key, true);
    } catch (error) {
      const code = error instanceof KeychainError ? error.code : "other";
      log?.warn(
        { code, err: (error as Error).message, accessGroup },
        code === "missing_entitlement"
          ? "this build is not signed with the keychain access group entitlement; using an ephemeral Secure Enclave key (lower trust)"
          : "the persistent Secure Enclave key is unavailable; using an ephemeral Secure Enclave key (lower trust)",
      );
    }
    try {
      return new SecureEnclaveSigner(await addon.createEphemeralKey(), false);
    } catch (error) {
      log?.warn(
        { err: (error as Error).message },
        "no Secure Enclave key could be made; using the software key",
      );
    }
  }
  return SoftwareSigner.loadOrCreate(options.dataDir);
}

/** The native keychain addon when it is installed (macOS builds), else undefined. */
export function loadKeychainAddon(): KeychainAddon | undefined {
  try {
    const required = createRequire(import.meta.url)("@darkbloom/native/keychain") as Partial<KeychainAddon>;
    if (
      typeof required.secureEnclaveAvailable === "function" &&
      typeof required.loadOrCreatePersistentKey === "function" &&
      typeof required.createEphemeralKey === "function"
    ) {
      return required as KeychainAddon;
    }
  } catch {
    // Not installed: the software key is used.
  }
  return undefined;
}
