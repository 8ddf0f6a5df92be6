import { generateKeyPairSync, type KeyObject, sign } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { rawP256PublicKey, verifyP256 } from "@darkbloom/protocol";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  createAttestationSigner,
  DEFAULT_ACCESS_GROUP,
  DEFAULT_KEY_LABEL,
  type KeychainAddon,
  KeychainError,
  type KeychainErrorCode,
  type NativeEnclaveKey,
  SecureEnclaveSigner,
} from "./secure-enclave.js";
import { SoftwareSigner } from "./software-signer.js";

/**
 * A strict stand-in for the native keychain addon (no Secure Enclave can run here): it holds one
 * persistent key per (access group, label) like the data-protection keychain, refuses argument shapes
 * the real addon would refuse, fails on any call the scenario did not expect, and signs with real
 * P-256 keys so that signatures verify.
 */
class StrictKeychain implements KeychainAddon {
  readonly calls: string[] = [];
  private readonly stored = new Map<string, KeyObject>();

  constructor(
    private readonly scenario: {
      available: boolean;
      /** The error loadOrCreatePersistentKey throws (e.g. an unsigned build: missing_entitlement). */
      persistentError?: KeychainErrorCode;
      ephemeralError?: KeychainErrorCode;
      /** Which calls are allowed at all. */
      allowed: ReadonlyArray<"secureEnclaveAvailable" | "loadOrCreatePersistentKey" | "createEphemeralKey">;
    },
  ) {}

  secureEnclaveAvailable(): boolean {
    this.expectAllowed("secureEnclaveAvailable");
    return this.scenario.available;
  }

  async loadOrCreatePersistentKey(options: {
    accessGroup: string;
    label: string;
  }): Promise<NativeEnclaveKey> {
    this.expectAllowed("loadOrCreatePersistentKey");
    if (Object.keys(options).sort().join(",") !== "accessGroup,label") throw new Error("unexpected options");
    if (!/^[A-Z0-9]{10}\.[a-z0-9.]+$/.test(options.accessGroup)) {
      throw new Error(`an access group is <team id>.<bundle id>, got ${options.accessGroup}`);
    }
    if (options.label.length === 0) throw new Error("a persistent key needs a label");
    if (this.scenario.persistentError) {
      throw new KeychainError(this.scenario.persistentError, `SecItemAdd: ${this.scenario.persistentError}`);
    }
    const id = `${options.accessGroup}/${options.label}`;
    let key = this.stored.get(id);
    if (!key) {
      key = generateKeyPairSync("ec", { namedCurve: "prime256v1" }).privateKey;
      this.stored.set(id, key);
    }
    return enclaveKey(key);
  }

  async createEphemeralKey(): Promise<NativeEnclaveKey> {
    this.expectAllowed("createEphemeralKey");
    if (this.scenario.ephemeralError) throw new KeychainError(this.scenario.ephemeralError, "no enclave");
    return enclaveKey(generateKeyPairSync("ec", { namedCurve: "prime256v1" }).privateKey);
  }

  private expectAllowed(call: (typeof this.scenario.allowed)[number]): void {
    this.calls.push(call);
    if (!this.scenario.allowed.includes(call)) throw new Error(`unexpected call to ${call}`);
  }
}

function enclaveKey(key: KeyObject): NativeEnclaveKey {
  return {
    publicKey: () => rawP256PublicKey(key),
    sign: async (data) => new Uint8Array(sign("sha256", data, { key, dsaEncoding: "der" })),
  };
}

const logger = pino({ level: "silent" });
let dataDir: string;
beforeEach(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "darkbloom-se-"));
});
afterEach(async () => {
  await rm(dataDir, { recursive: true, force: true });
});

describe("createAttestationSigner", () => {
  it("on macOS uses the persistent Secure Enclave key under the team access group, the same one each start", async () => {
    const keychain = new StrictKeychain({
      available: true,
      allowed: ["secureEnclaveAvailable", "loadOrCreatePersistentKey"],
    });
    const a = await createAttestationSigner({ dataDir, platform: "darwin", addon: keychain, logger });
    expect(a).toBeInstanceOf(SecureEnclaveSigner);
    expect(a.kind).toBe("secure_enclave");
    expect(a.persistent).toBe(true);
    const b = await createAttestationSigner({ dataDir, platform: "darwin", addon: keychain, logger });
    expect(b.publicKey()).toEqual(a.publicKey());
    const data = new TextEncoder().encode("x");
    expect(verifyP256(a.publicKey(), data, await b.sign(data))).toBe(true);
    expect(DEFAULT_ACCESS_GROUP).toBe("SLDQ2GJ6TL.io.darkbloom.provider");
    expect(DEFAULT_KEY_LABEL).toBe("io.darkbloom.provider.attestation-signing.v1");
  });

  it("falls back to an ephemeral enclave key (not persistent) when the build lacks the entitlement", async () => {
    const keychain = new StrictKeychain({
      available: true,
      persistentError: "missing_entitlement",
      allowed: ["secureEnclaveAvailable", "loadOrCreatePersistentKey", "createEphemeralKey"],
    });
    const signer = await createAttestationSigner({ dataDir, platform: "darwin", addon: keychain, logger });
    expect(signer.kind).toBe("secure_enclave");
    expect(signer.persistent).toBe(false);
    expect(keychain.calls).toEqual([
      "secureEnclaveAvailable",
      "loadOrCreatePersistentKey",
      "createEphemeralKey",
    ]);
  });

  it("falls back to the software key when no enclave key can be made at all", async () => {
    const keychain = new StrictKeychain({
      available: true,
      persistentError: "interaction_not_allowed",
      ephemeralError: "unavailable",
      allowed: ["secureEnclaveAvailable", "loadOrCreatePersistentKey", "createEphemeralKey"],
    });
    const signer = await createAttestationSigner({ dataDir, platform: "darwin", addon: keychain, logger });
    expect(signer).toBeInstanceOf(SoftwareSigner);
    expect(signer.persistent).toBe(true);
  });

  it("never touches the keychain without a Secure Enclave, or off macOS", async () => {
    const noEnclave = new StrictKeychain({ available: false, allowed: ["secureEnclaveAvailable"] });
    expect(
      await createAttestationSigner({ dataDir, platform: "darwin", addon: noEnclave, logger }),
    ).toBeInstanceOf(SoftwareSigner);
    const linux = new StrictKeychain({ available: true, allowed: [] });
    expect(
      await createAttestationSigner({ dataDir, platform: "linux", addon: linux, logger }),
    ).toBeInstanceOf(SoftwareSigner);
    expect(linux.calls).toEqual([]);
    // Without the addon installed (every machine here), macOS gets the software key too.
    expect((await createAttestationSigner({ dataDir, platform: "darwin", logger })).kind).toBe("software");
  });

  it("refuses an enclave key whose public key is not a P-256 point", () => {
    expect(
      () =>
        new SecureEnclaveSigner(
          { publicKey: () => new Uint8Array(33), sign: async () => new Uint8Array() },
          true,
        ),
    ).toThrow(/33-byte public key/);
  });
});
