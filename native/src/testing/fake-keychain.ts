import { createHash, generateKeyPairSync, type KeyObject, sign } from "node:crypto";
import {
  type CallResult,
  type CreateKeyAttributes,
  type FoundKey,
  type KeychainPrimitives,
  type KeyHandle,
  type KeyQuery,
  OSStatus,
  TokenErrorCode,
} from "../keychain.js";

export type PrimitiveName = keyof KeychainPrimitives;

/** A result failNext() makes a primitive report, payload included. */
export type InjectedResult = CallResult &
  Partial<{ keys: FoundKey[]; key: KeyHandle; publicKey: Uint8Array; signature: Uint8Array }>;

export interface FakeKeychainOptions {
  /**
   * The access groups the "process" is entitled to (its keychain-access-groups). Empty, the default,
   * is a stock `node` or an ad-hoc signed build.
   */
  entitledGroups?: readonly string[];
  /** Whether the Mac has a Secure Enclave (Apple silicon, or Intel with a T2). Default true. */
  secureEnclave?: boolean;
  /** Before the first unlock since boot: keychain items and stored keys cannot be used. */
  locked?: boolean;
  /**
   * Whether creating a non-permanent enclave key also needs an entitlement. Unknown for real macOS
   * (developers report ad-hoc signed binaries failing enclave key generation with -34018); tests run
   * both ways. Default false.
   */
  ephemeralNeedsEntitlement?: boolean;
  /** The clock behind kSecAttrCreationDate. Default: strictly increasing from Date.now(). */
  now?: () => number;
}

interface KeyRecord {
  readonly privateKey: KeyObject;
  readonly publicKey: Uint8Array;
  readonly permanent: boolean;
  readonly accessGroup?: string;
  readonly label?: string;
  readonly createdAtMs: number;
  readonly applicationLabel: Uint8Array;
  /** Set when the item was deleted: what later calls through a live handle report. */
  removedStatus?: CallResult;
}

export interface StoredKey {
  accessGroup: string;
  label: string;
  createdAtMs: number;
  publicKey: Uint8Array;
}

/**
 * A strict stand-in for the keychain addon's primitives, modelling what the real Security framework
 * does with each call, so that the decision logic is tested on Linux:
 *
 * - stored keys live in the data-protection keychain, found by (access group, label); a label is not
 *   unique (as in the real keychain, where a key's primary key includes its public key hash), so
 *   creating twice under one label stores two keys;
 * - a call without useDataProtectionKeychain: true throws: the real call would silently go to the
 *   file-based keychain, which ignores access groups, and nothing downstream would notice;
 * - a permanent key needs an access group and a label (else the real key lands unlabelled in the
 *   process's default group): missing ones throw;
 * - entitlements: creating or deleting in a group the process is not entitled to answers
 *   errSecMissingEntitlement (-34018); a lookup there answers errSecItemNotFound, as developers
 *   measured on macOS (the data-protection keychain hides the refusal from reads);
 * - no Secure Enclave: key creation answers CryptoTokenKit's token-not-found;
 * - locked: stored keys and items answer errSecInteractionNotAllowed (-25308);
 * - keys are real P-256 keys (node:crypto), so signatures verify;
 * - removeKeys() deletes items out from under live handles, whose later signs fail as the real
 *   framework reports a vanished key (errSecItemNotFound by default; any result can be chosen).
 *
 * failNext() injects one result for one primitive, for statuses the model does not produce itself.
 * Every call is journaled in `calls`, in order.
 */
export class FakeKeychain implements KeychainPrimitives {
  readonly entitledGroups: Set<string>;
  secureEnclave: boolean;
  locked: boolean;
  ephemeralNeedsEntitlement: boolean;
  readonly calls: Array<{ name: PrimitiveName; args: unknown }> = [];
  private readonly items: KeyRecord[] = [];
  private readonly handles = new WeakMap<object, KeyRecord>();
  private readonly injected = new Map<PrimitiveName, InjectedResult[]>();
  private readonly now: () => number;

  constructor(options: FakeKeychainOptions = {}) {
    this.entitledGroups = new Set(options.entitledGroups ?? []);
    this.secureEnclave = options.secureEnclave ?? true;
    this.locked = options.locked ?? false;
    this.ephemeralNeedsEntitlement = options.ephemeralNeedsEntitlement ?? false;
    let last = 0;
    this.now =
      options.now ??
      (() => {
        last = Math.max(last + 1, Date.now());
        return last;
      });
  }

  /** The next call of `name` reports `result` instead of doing anything. */
  failNext(name: PrimitiveName, result: InjectedResult): void {
    const queue = this.injected.get(name) ?? [];
    queue.push(result);
    this.injected.set(name, queue);
  }

  /** The stored keys, optionally only those under (accessGroup, label). */
  storedKeys(accessGroup?: string, label?: string): StoredKey[] {
    return this.items
      .filter(
        (k) =>
          (accessGroup === undefined || k.accessGroup === accessGroup) &&
          (label === undefined || k.label === label),
      )
      .map((k) => ({
        accessGroup: k.accessGroup!,
        label: k.label!,
        createdAtMs: k.createdAtMs,
        publicKey: k.publicKey,
      }));
  }

  /**
   * Deletes the stored keys under (accessGroup, label) behind the process's back (another process, or
   * a user in Keychain Access): live handles stay, and their signs report `signResult`.
   */
  removeKeys(
    accessGroup: string,
    label: string,
    signResult: CallResult = { status: OSStatus.itemNotFound },
  ): number {
    const removed = this.items.filter((k) => k.accessGroup === accessGroup && k.label === label);
    for (const record of removed) {
      record.removedStatus = signResult;
      this.items.splice(this.items.indexOf(record), 1);
    }
    return removed.length;
  }

  async copyKeys(query: KeyQuery): Promise<CallResult & { keys?: FoundKey[] }> {
    this.journal("copyKeys", query);
    this.expectQuery("SecItemCopyMatching", query);
    const injected = this.takeInjected("copyKeys");
    if (injected) return injected;
    if (this.locked) return { status: OSStatus.interactionNotAllowed };
    if (!this.entitledGroups.has(query.accessGroup)) return { status: OSStatus.itemNotFound };
    const matches = this.items.filter((k) => k.accessGroup === query.accessGroup && k.label === query.label);
    if (matches.length === 0) return { status: OSStatus.itemNotFound };
    return {
      status: OSStatus.success,
      // Like SecItemCopyMatching, each query hands out new references to the same items.
      keys: matches.map((k) => ({
        key: this.handleFor(k),
        createdAtMs: k.createdAtMs,
        applicationLabel: k.applicationLabel,
      })),
    };
  }

  async createKey(attributes: CreateKeyAttributes): Promise<CallResult & { key?: KeyHandle }> {
    this.journal("createKey", attributes);
    this.expectDataProtection("SecKeyCreateRandomKey", attributes.useDataProtectionKeychain);
    if (typeof attributes.permanent !== "boolean")
      throw new TypeError("FakeKeychain: permanent must be a boolean");
    if (attributes.permanent) {
      this.expectName("SecKeyCreateRandomKey", "accessGroup", attributes.accessGroup);
      this.expectName("SecKeyCreateRandomKey", "label", attributes.label);
    } else if (attributes.accessGroup !== undefined || attributes.label !== undefined) {
      throw new TypeError(
        "FakeKeychain: a non-permanent key is never stored: it takes no access group or label",
      );
    }
    const injected = this.takeInjected("createKey");
    if (injected) return injected;
    if (!this.secureEnclave) {
      return { status: TokenErrorCode.tokenNotFound, domain: "CryptoTokenKit", message: "no Secure Enclave" };
    }
    const entitled = attributes.permanent
      ? this.entitledGroups.has(attributes.accessGroup!)
      : !this.ephemeralNeedsEntitlement || this.entitledGroups.size > 0;
    if (!entitled) {
      return {
        status: OSStatus.missingEntitlement,
        domain: "NSOSStatusErrorDomain",
        message: "SecKeyCreateRandomKey: A required entitlement isn't present.",
      };
    }
    if (attributes.permanent && this.locked) {
      return { status: OSStatus.interactionNotAllowed, domain: "NSOSStatusErrorDomain" };
    }
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
    const point = rawPoint(publicKey);
    const record: KeyRecord = {
      privateKey,
      publicKey: point,
      permanent: attributes.permanent,
      ...(attributes.permanent ? { accessGroup: attributes.accessGroup!, label: attributes.label! } : {}),
      createdAtMs: this.now(),
      applicationLabel: new Uint8Array(createHash("sha1").update(point).digest()),
    };
    if (record.permanent) this.items.push(record);
    return { status: OSStatus.success, key: this.handleFor(record) };
  }

  async deleteKeys(query: KeyQuery): Promise<CallResult> {
    this.journal("deleteKeys", query);
    this.expectQuery("SecItemDelete", query);
    const injected = this.takeInjected("deleteKeys");
    if (injected) return injected;
    if (this.locked) return { status: OSStatus.interactionNotAllowed };
    if (!this.entitledGroups.has(query.accessGroup)) return { status: OSStatus.missingEntitlement };
    const removed = this.removeKeys(query.accessGroup, query.label);
    return { status: removed > 0 ? OSStatus.success : OSStatus.itemNotFound };
  }

  async publicKey(key: KeyHandle): Promise<CallResult & { publicKey?: Uint8Array }> {
    this.journal("publicKey", key);
    const record = this.recordOf(key);
    const injected = this.takeInjected("publicKey");
    if (injected) return injected;
    return { status: OSStatus.success, publicKey: record.publicKey.slice() };
  }

  async sign(key: KeyHandle, data: Uint8Array): Promise<CallResult & { signature?: Uint8Array }> {
    this.journal("sign", { key, data });
    const record = this.recordOf(key);
    if (!(data instanceof Uint8Array)) throw new TypeError("FakeKeychain: sign takes a Uint8Array");
    const injected = this.takeInjected("sign");
    if (injected) return injected;
    if (record.removedStatus) return record.removedStatus;
    if (record.permanent && this.locked) return { status: OSStatus.interactionNotAllowed };
    const signature = sign("sha256", data, { key: record.privateKey, dsaEncoding: "der" });
    return { status: OSStatus.success, signature: new Uint8Array(signature) };
  }

  private journal(name: PrimitiveName, args: unknown): void {
    this.calls.push({ name, args });
  }

  private takeInjected(name: PrimitiveName): InjectedResult | undefined {
    return this.injected.get(name)?.shift();
  }

  private handleFor(record: KeyRecord): KeyHandle {
    const handle = Object.freeze({});
    this.handles.set(handle, record);
    return handle as KeyHandle;
  }

  private recordOf(key: KeyHandle): KeyRecord {
    const record = typeof key === "object" && key !== null ? this.handles.get(key) : undefined;
    if (!record) throw new TypeError("FakeKeychain: expected a key handle from this keychain");
    return record;
  }

  private expectQuery(call: string, query: KeyQuery): void {
    this.expectDataProtection(call, query.useDataProtectionKeychain);
    this.expectName(call, "accessGroup", query.accessGroup);
    this.expectName(call, "label", query.label);
  }

  private expectDataProtection(call: string, flag: unknown): void {
    if (flag !== true) {
      throw new TypeError(
        `FakeKeychain: ${call} without useDataProtectionKeychain: true would use the file-based keychain, which ignores access groups`,
      );
    }
  }

  private expectName(call: string, name: string, value: unknown): void {
    if (typeof value !== "string" || value.length === 0) {
      throw new TypeError(`FakeKeychain: ${call} needs a non-empty ${name}`);
    }
  }
}

/** The SEC1 uncompressed point of a P-256 public key, as SecKeyCopyExternalRepresentation gives it. */
function rawPoint(publicKey: KeyObject): Uint8Array {
  const jwk = publicKey.export({ format: "jwk" });
  return new Uint8Array([0x04, ...Buffer.from(jwk.x!, "base64url"), ...Buffer.from(jwk.y!, "base64url")]);
}
