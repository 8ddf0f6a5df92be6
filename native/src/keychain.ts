import { createRequire } from "node:module";
import { errorCodes } from "./coded-error.js";

/**
 * The provider's Secure Enclave keys in the macOS keychain. The addon (addon/keychain/) exposes one
 * primitive per Security framework call and reports each call's status; everything decided about
 * those statuses is decided here, so that it runs on Linux in CI against the strict fake in
 * ./testing/fake-keychain.ts:
 *
 * - every query, create and delete names the data-protection keychain (kSecUseDataProtectionKeychain),
 *   since on macOS the access group only applies there;
 * - the persistent key is looked up first and created only when the lookup says errSecItemNotFound;
 * - a label is not unique in the keychain (a key item's primary key is its public key hash, tag, type,
 *   size and access group), so two daemons starting together can each create a key: after creating,
 *   the key is looked up again and the oldest under the label wins, so every daemon settles on one;
 * - every other status is an Error with a stable `code` and the OSStatus as `status`; callers classify
 *   it with keychainErrorCode(), which reads `code` from any thrown value and never relies on a class.
 */

/** OSStatus values the decision logic tells apart (Security/SecBase.h). */
export const OSStatus = {
  success: 0,
  unimplemented: -4,
  param: -50,
  userCanceled: -128,
  notAvailable: -25291,
  authFailed: -25293,
  duplicateItem: -25299,
  itemNotFound: -25300,
  /** "The specified item is no longer valid. It may have been deleted from the keychain." */
  invalidItemRef: -25304,
  interactionNotAllowed: -25308,
  missingEntitlement: -34018,
  invalidKeyRef: -67712,
} as const;

/**
 * CryptoTokenKit's codes (TKError.h). The Secure Enclave is a token, and some of its failures arrive
 * as a CFError in the CryptoTokenKit domain rather than as an OSStatus.
 */
export const TokenErrorCode = {
  notImplemented: -1,
  canceledByUser: -4,
  authenticationFailed: -5,
  objectNotFound: -6,
  tokenNotFound: -7,
  authenticationNeeded: -9,
} as const;

/** The domain of a CFError whose code is an OSStatus (kCFErrorDomainOSStatus). */
export const OSSTATUS_DOMAIN = "NSOSStatusErrorDomain";
/** TKErrorDomain's value, and its constant's name as some bridges report it. */
const TOKEN_DOMAINS: ReadonlySet<string> = new Set(["CryptoTokenKit", "TKErrorDomain"]);

/**
 * Why a keychain call failed:
 * - missing_entitlement: the process is not signed with the key's access group (errSecMissingEntitlement);
 * - interaction_not_allowed: the keychain is locked (before the first unlock since boot);
 * - auth_failed: authentication failed or was cancelled;
 * - unavailable: no Secure Enclave (Intel without T2, most VMs), or no addon on this machine;
 * - key_not_found: the key is gone (deleted while a handle to it was in use);
 * - other: anything else; `status` says what.
 */
export type KeychainErrorCode =
  | "missing_entitlement"
  | "interaction_not_allowed"
  | "auth_failed"
  | "unavailable"
  | "key_not_found"
  | "other";

const ERROR_CODES = errorCodes<KeychainErrorCode>([
  "missing_entitlement",
  "interaction_not_allowed",
  "auth_failed",
  "unavailable",
  "key_not_found",
  "other",
]);

/**
 * The keychain code of any thrown value carrying one: this module's errors, a plain Error or object
 * with a `code` property, the provider's own KeychainError. Never instanceof: an error that crossed a
 * package, realm or addon boundary is not an instance of anything the caller imported.
 */
export function keychainErrorCode(error: unknown): KeychainErrorCode | undefined {
  return ERROR_CODES.codeOf(error);
}

/** A failed keychain call: `status` is its OSStatus (or CFError code, in `domain`). */
export class KeychainStatusError extends Error {
  override readonly name = "KeychainStatusError";

  constructor(
    readonly code: KeychainErrorCode,
    message: string,
    readonly status?: number,
    readonly domain?: string,
  ) {
    super(message);
  }
}

/** What a status means to the caller. */
export function classifyStatus(status: number, domain?: string): KeychainErrorCode {
  if (domain !== undefined && TOKEN_DOMAINS.has(domain)) {
    switch (status) {
      case TokenErrorCode.objectNotFound:
        return "key_not_found";
      case TokenErrorCode.tokenNotFound:
      case TokenErrorCode.notImplemented:
        return "unavailable";
      case TokenErrorCode.canceledByUser:
      case TokenErrorCode.authenticationFailed:
        return "auth_failed";
      case TokenErrorCode.authenticationNeeded:
        return "interaction_not_allowed";
      default:
        return "other";
    }
  }
  if (domain !== undefined && domain !== OSSTATUS_DOMAIN) return "other";
  switch (status) {
    case OSStatus.missingEntitlement:
      return "missing_entitlement";
    case OSStatus.interactionNotAllowed:
      return "interaction_not_allowed";
    case OSStatus.authFailed:
    case OSStatus.userCanceled:
      return "auth_failed";
    case OSStatus.notAvailable:
    case OSStatus.unimplemented:
      return "unavailable";
    case OSStatus.itemNotFound:
    case OSStatus.invalidItemRef:
    case OSStatus.invalidKeyRef:
      return "key_not_found";
    default:
      return "other";
  }
}

declare const keyHandleBrand: unique symbol;
/** A SecKeyRef held by the addon, released when the handle is garbage collected. Opaque. */
export interface KeyHandle {
  readonly [keyHandleBrand]: true;
}

/** What a primitive reports: the call's status, and for a CFError its domain and description. */
export interface CallResult {
  status: number;
  domain?: string;
  message?: string;
}

export interface KeyQuery {
  accessGroup: string;
  label: string;
  /** kSecUseDataProtectionKeychain; this module always sets it, and the strict fake demands it. */
  useDataProtectionKeychain: boolean;
}

export interface CreateKeyAttributes {
  /** kSecAttrIsPermanent: stored in the keychain (with accessGroup and label), or ephemeral. */
  permanent: boolean;
  accessGroup?: string;
  label?: string;
  useDataProtectionKeychain: boolean;
}

export interface FoundKey {
  key: KeyHandle;
  /** kSecAttrCreationDate, ms since the Unix epoch. */
  createdAtMs: number;
  /** kSecAttrApplicationLabel (the public key's hash): breaks ties between keys created together. */
  applicationLabel: Uint8Array;
}

/** The addon's primitives, one per Security call (see addon/keychain/addon.cc). */
export interface KeychainPrimitives {
  /** SecItemCopyMatching, kSecMatchLimitAll: every enclave key with this label in this group. */
  copyKeys(query: KeyQuery): Promise<CallResult & { keys?: FoundKey[] }>;
  /** SecKeyCreateRandomKey in the Secure Enclave (P-256, private-key usage, this device only). */
  createKey(attributes: CreateKeyAttributes): Promise<CallResult & { key?: KeyHandle }>;
  /** SecItemDelete of every key the query matches. */
  deleteKeys(query: KeyQuery): Promise<CallResult>;
  /** SecKeyCopyPublicKey + SecKeyCopyExternalRepresentation: the 65-byte SEC1 point. */
  publicKey(key: KeyHandle): Promise<CallResult & { publicKey?: Uint8Array }>;
  /** SecKeyCreateSignature, ECDSA P-256 over SHA-256 of data, DER encoded. */
  sign(key: KeyHandle, data: Uint8Array): Promise<CallResult & { signature?: Uint8Array }>;
}

/** A Secure Enclave key. */
export interface EnclaveKey {
  /** SEC1 uncompressed P-256 point (65 bytes), read once when the key was loaded. */
  publicKey(): Uint8Array;
  /** ECDSA-SHA256 over data, DER encoded, computed inside the enclave. */
  sign(data: Uint8Array): Promise<Uint8Array>;
}

export interface Keychain {
  /**
   * Whether the daemon should try the enclave: it creates a throwaway non-permanent enclave key (a
   * real probe, the same call the ephemeral fallback makes; C has no SecureEnclave.isAvailable).
   * False when that fails as "no enclave" or for an unknown reason; true when it works, and also when
   * the OS refused before reaching the enclave (entitlement, locked keychain), so that the key calls
   * that follow fail with a code that says why.
   */
  secureEnclaveAvailable(): Promise<boolean>;
  /** The persistent key under (accessGroup, label), created on first use. */
  loadOrCreatePersistentKey(options: { accessGroup: string; label: string }): Promise<EnclaveKey>;
  /** A key that is never stored: gone when the process exits. */
  createEphemeralKey(): Promise<EnclaveKey>;
  /** Deletes the persistent key(s) under (accessGroup, label); false when there were none. */
  deletePersistentKey(options: { accessGroup: string; label: string }): Promise<boolean>;
}

const INCONCLUSIVE_PROBE: ReadonlySet<KeychainErrorCode> = new Set([
  "missing_entitlement",
  "interaction_not_allowed",
  "auth_failed",
]);

function failure(call: string, result: CallResult): KeychainStatusError {
  const code = result.status === OSStatus.success ? "other" : classifyStatus(result.status, result.domain);
  const detail =
    result.message ??
    `${call} failed with ${result.domain ? `${result.domain} ` : "OSStatus "}${result.status}`;
  return new KeychainStatusError(code, detail, result.status, result.domain);
}

function requireName(name: string, value: unknown): void {
  if (typeof value !== "string" || value.length === 0)
    throw new TypeError(`${name} must be a non-empty string`);
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i] !== b[i]) return a[i]! - b[i]!;
  }
  return a.length - b.length;
}

/** The oldest key, ties broken by application label: the same choice in every daemon. */
function oldest(keys: readonly FoundKey[]): FoundKey | undefined {
  return [...keys].sort(
    (a, b) => a.createdAtMs - b.createdAtMs || compareBytes(a.applicationLabel, b.applicationLabel),
  )[0];
}

/** The keychain logic over a set of primitives: the addon's, or a fake's. */
export function createKeychain(primitives: KeychainPrimitives): Keychain {
  async function enclaveKey(key: KeyHandle): Promise<EnclaveKey> {
    const exported = await primitives.publicKey(key);
    if (exported.status !== OSStatus.success || !exported.publicKey) {
      throw failure("SecKeyCopyExternalRepresentation", exported);
    }
    const point = Uint8Array.from(exported.publicKey);
    if (point.length !== 65 || point[0] !== 0x04) {
      throw new KeychainStatusError(
        "other",
        `the enclave returned a ${point.length}-byte public key, expected 65`,
      );
    }
    return {
      publicKey: () => point.slice(),
      sign: async (data) => {
        const signed = await primitives.sign(key, data);
        if (signed.status !== OSStatus.success || !signed.signature)
          throw failure("SecKeyCreateSignature", signed);
        return signed.signature;
      },
    };
  }

  async function lookup(query: KeyQuery): Promise<FoundKey | undefined> {
    const found = await primitives.copyKeys(query);
    if (found.status === OSStatus.itemNotFound) return undefined;
    if (found.status !== OSStatus.success) throw failure("SecItemCopyMatching", found);
    return oldest(found.keys ?? []);
  }

  async function createEphemeralHandle(): Promise<KeyHandle> {
    const created = await primitives.createKey({ permanent: false, useDataProtectionKeychain: true });
    if (created.status !== OSStatus.success || !created.key) throw failure("SecKeyCreateRandomKey", created);
    return created.key;
  }

  return {
    async secureEnclaveAvailable() {
      try {
        await createEphemeralHandle();
        return true;
      } catch (error) {
        const code = keychainErrorCode(error);
        return code !== undefined && INCONCLUSIVE_PROBE.has(code);
      }
    },

    async loadOrCreatePersistentKey({ accessGroup, label }) {
      requireName("accessGroup", accessGroup);
      requireName("label", label);
      const query: KeyQuery = { accessGroup, label, useDataProtectionKeychain: true };
      const existing = await lookup(query);
      if (existing) return enclaveKey(existing.key);
      const created = await primitives.createKey({
        permanent: true,
        accessGroup,
        label,
        useDataProtectionKeychain: true,
      });
      // errSecDuplicateItem cannot come from a random key's own primary key, but a racing create may
      // still be reported so: either way the keychain now holds a key, and the lookup below finds it.
      if (created.status !== OSStatus.success && created.status !== OSStatus.duplicateItem) {
        throw failure("SecKeyCreateRandomKey", created);
      }
      const settled = await lookup(query);
      if (!settled) {
        throw new KeychainStatusError(
          "key_not_found",
          `the key created under ${accessGroup} / ${label} is not in the keychain`,
          OSStatus.itemNotFound,
        );
      }
      return enclaveKey(settled.key);
    },

    async createEphemeralKey() {
      return enclaveKey(await createEphemeralHandle());
    },

    async deletePersistentKey({ accessGroup, label }) {
      requireName("accessGroup", accessGroup);
      requireName("label", label);
      const deleted = await primitives.deleteKeys({ accessGroup, label, useDataProtectionKeychain: true });
      if (deleted.status === OSStatus.itemNotFound) return false;
      if (deleted.status !== OSStatus.success) throw failure("SecItemDelete", deleted);
      return true;
    },
  };
}

/** Where scripts/build.mjs leaves the addon, relative to this module in src/ and in dist/. */
const BINDING_PATH = "../build/Release/darkbloom_keychain.node";
const PRIMITIVES: ReadonlyArray<keyof KeychainPrimitives> = [
  "copyKeys",
  "createKey",
  "deleteKeys",
  "publicKey",
  "sign",
];

export type NativeKeychain =
  | { keychain: Keychain; reason?: undefined }
  | { keychain?: undefined; reason: string };
let native: NativeKeychain | undefined;

/**
 * The keychain over the real addon, or why there is none (not macOS, not built, failed to load). The
 * addon is loaded on first use, never at import, so importing this module is safe on every platform.
 */
export function loadNativeKeychain(): NativeKeychain {
  native ??= loadBinding();
  return native;
}

function loadBinding(): NativeKeychain {
  if (process.platform !== "darwin")
    return { reason: `the keychain addon is macOS only (this is ${process.platform})` };
  let binding: Partial<Record<keyof KeychainPrimitives, unknown>>;
  try {
    binding = createRequire(import.meta.url)(BINDING_PATH);
  } catch (error) {
    return { reason: `the keychain addon did not load (npm run build:native): ${(error as Error).message}` };
  }
  const missing = PRIMITIVES.filter((name) => typeof binding[name] !== "function");
  if (missing.length > 0) return { reason: `the keychain addon lacks ${missing.join(", ")}` };
  return { keychain: createKeychain(binding as KeychainPrimitives) };
}

function requireNative(): Keychain {
  const loaded = loadNativeKeychain();
  if (!loaded.keychain) throw new KeychainStatusError("unavailable", loaded.reason);
  return loaded.keychain;
}

/** See Keychain.secureEnclaveAvailable; false where the addon is not loaded. */
export async function secureEnclaveAvailable(): Promise<boolean> {
  const loaded = loadNativeKeychain();
  return loaded.keychain ? loaded.keychain.secureEnclaveAvailable() : false;
}

/** See Keychain.loadOrCreatePersistentKey; an "unavailable" error where the addon is not loaded. */
export async function loadOrCreatePersistentKey(options: {
  accessGroup: string;
  label: string;
}): Promise<EnclaveKey> {
  return requireNative().loadOrCreatePersistentKey(options);
}

/** See Keychain.createEphemeralKey; an "unavailable" error where the addon is not loaded. */
export async function createEphemeralKey(): Promise<EnclaveKey> {
  return requireNative().createEphemeralKey();
}

/** See Keychain.deletePersistentKey; an "unavailable" error where the addon is not loaded. */
export async function deletePersistentKey(options: { accessGroup: string; label: string }): Promise<boolean> {
  return requireNative().deletePersistentKey(options);
}
