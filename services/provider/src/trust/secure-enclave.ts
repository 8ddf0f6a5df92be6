import {
  type EnclaveKey,
  type Keychain,
  type KeychainErrorCode,
  keychainErrorCode,
  loadNativeKeychain,
} from "@darkbloom/native/keychain";
import type { Logger } from "pino";
import type { AttestationSigner } from "./signer.js";
import { SoftwareSigner } from "./software-signer.js";

/**
 * The keychain part of the native addon (@darkbloom/native/keychain, macOS only), as the daemon calls
 * it. It keeps the attestation key in the Secure Enclave the way reference/001 (PR #146) describes:
 *
 * - `loadOrCreatePersistentKey` finds, or creates once, a Secure Enclave P-256 key with
 *   `kSecAttrTokenIDSecureEnclave`, `kSecAttrIsPermanent: true`, `kSecUseDataProtectionKeychain: true`
 *   (on every create, query and delete: without it the access group is silently ignored),
 *   `kSecAttrAccessGroup: <team>.io.darkbloom.provider` and `kSecAttrLabel: <label>`. Only binaries
 *   signed by the team (with the `keychain-access-groups` entitlement, authorized by a provisioning
 *   profile: docs/PROVIDER-MAC.md) can use it; the private key never leaves the enclave. It looks up
 *   first and creates only when the lookup says "not found"; every other lookup failure is thrown,
 *   never papered over by a second key.
 * - `createEphemeralKey` makes a Secure Enclave key that is not stored (lost at exit).
 * - Errors carry `code` (KeychainErrorCode): "missing_entitlement" (errSecMissingEntitlement, -34018:
 *   a stock `node`, an ad-hoc or foreign-team signature), "unavailable" (no Secure Enclave: Intel
 *   without T2, most VMs), "interaction_not_allowed" / "auth_failed" (keychain locked),
 *   "key_not_found" (the key was deleted while in use), or "other". They are classified by that
 *   property (keychainErrorCode), never by class: what an addon throws is no instance of ours.
 */
export type KeychainAddon = Pick<
  Keychain,
  "secureEnclaveAvailable" | "loadOrCreatePersistentKey" | "createEphemeralKey"
>;

/** A Secure Enclave key handle from the addon. */
export type NativeEnclaveKey = EnclaveKey;

export { type KeychainErrorCode, keychainErrorCode };

/** An error the provider raises about an enclave key. What the addon throws is never an instance of it. */
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

/**
 * A signer whose key lives in the Secure Enclave. If the key disappears while the daemon runs (deleted
 * by another process of the team), signing fails with "key_not_found": the
 * signer logs it once, as an error, and from then on fails every signature at once with that code.
 * The daemon keeps running (a failed challenge answer or response signature is an ordinary failure),
 * but it no longer proves who it is; its next start finds no key and creates one, which the
 * coordinator sees as a new key (trust starts again from self_signed until it is enrolled).
 */
export class SecureEnclaveSigner implements AttestationSigner {
  readonly kind = "secure_enclave" as const;
  private readonly raw: Uint8Array;
  private lost: KeychainError | undefined;

  constructor(
    private readonly key: NativeEnclaveKey,
    readonly persistent: boolean,
    private readonly log?: Logger,
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

  async sign(data: Uint8Array): Promise<Uint8Array> {
    if (this.lost) throw this.lost;
    try {
      return await this.key.sign(data);
    } catch (error) {
      if (keychainErrorCode(error) !== "key_not_found") throw error;
      const message = (error as Error).message;
      this.lost = new KeychainError(
        "key_not_found",
        `the ${this.persistent ? "persistent" : "ephemeral"} Secure Enclave key is gone (${message}); restart the daemon`,
      );
      this.log?.error(
        { err: message, persistent: this.persistent },
        "the attestation key was deleted while the daemon runs: signatures fail until a restart, which creates a new key (a new key to the coordinator)",
      );
      throw this.lost;
    }
  }
}

export interface SignerFactoryOptions {
  /** For the software key file. */
  dataDir: string;
  platform?: NodeJS.Platform;
  /**
   * The keychain addon; by default @darkbloom/native's on macOS, when it is built (npm run
   * build:native) and loads.
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
  if (platform === "darwin") {
    const signer = await enclaveSigner(options, log);
    if (signer) return signer;
  }
  return SoftwareSigner.loadOrCreate(options.dataDir);
}

/** Steps 1 and 2 of createAttestationSigner; undefined when the software key is to be used. */
async function enclaveSigner(
  options: SignerFactoryOptions,
  log: Logger | undefined,
): Promise<SecureEnclaveSigner | undefined> {
  let addon = options.addon;
  if (!addon) {
    const loaded = loadNativeKeychain();
    if (!loaded.keychain) {
      log?.warn({ reason: loaded.reason }, "no keychain addon; using the software key");
      return undefined;
    }
    addon = loaded.keychain;
  }
  if (!(await addon.secureEnclaveAvailable())) {
    log?.info("no usable Secure Enclave; using the software key");
    return undefined;
  }
  const accessGroup =
    options.accessGroup ?? (process.env.DARKBLOOM_KEYCHAIN_ACCESS_GROUP || DEFAULT_ACCESS_GROUP);
  const label = options.label ?? DEFAULT_KEY_LABEL;
  try {
    const key = await addon.loadOrCreatePersistentKey({ accessGroup, label });
    log?.info({ accessGroup }, "attestation key: persistent Secure Enclave key");
    return new SecureEnclaveSigner(key, true, log);
  } catch (error) {
    const code = keychainErrorCode(error) ?? "other";
    log?.warn(
      { code, err: (error as Error).message, accessGroup },
      code === "missing_entitlement"
        ? "this build is not signed with the keychain access group entitlement; using an ephemeral Secure Enclave key (lower trust)"
        : "the persistent Secure Enclave key is unavailable; using an ephemeral Secure Enclave key (lower trust)",
    );
  }
  try {
    return new SecureEnclaveSigner(await addon.createEphemeralKey(), false, log);
  } catch (error) {
    log?.warn(
      { code: keychainErrorCode(error) ?? "other", err: (error as Error).message },
      "no Secure Enclave key could be made; using the software key",
    );
    return undefined;
  }
}

/** The native keychain addon when it is built and loads (macOS), else undefined. */
export function loadKeychainAddon(): KeychainAddon | undefined {
  return loadNativeKeychain().keychain;
}
