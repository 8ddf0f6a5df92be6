import { generateKeyPairSync, type KeyObject, sign } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createKeychain } from "@darkbloom/native/keychain";
import { FakeKeychain } from "@darkbloom/native/testing";
import { rawP256PublicKey, verifyP256 } from "@darkbloom/protocol";
import { type Logger, pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  createAttestationSigner,
  DEFAULT_ACCESS_GROUP,
  DEFAULT_KEY_LABEL,
  type KeychainAddon,
  KeychainError,
  type KeychainErrorCode,
  keychainErrorCode,
  type NativeEnclaveKey,
  SecureEnclaveSigner,
} from "./secure-enclave.js";
import { SoftwareSigner } from "./software-signer.js";

/**
 * A strict stand-in for the native keychain addon (no Secure Enclave can run here): it holds one
 * persistent key per (access group, label) like the data-protection keychain, refuses argument shapes
 * the real addon would refuse, fails on any call the scenario did not expect, signs with real P-256
 * keys so that signatures verify, and throws what an addon throws: plain Errors with a `code`, no
 * instance of any class the provider knows.
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

  async secureEnclaveAvailable(): Promise<boolean> {
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
      throw codedError(
        this.scenario.persistentError,
        `SecKeyCreateRandomKey: ${this.scenario.persistentError}`,
      );
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
    if (this.scenario.ephemeralError) throw codedError(this.scenario.ephemeralError, "no enclave");
    return enclaveKey(generateKeyPairSync("ec", { namedCurve: "prime256v1" }).privateKey);
  }

  private expectAllowed(call: (typeof this.scenario.allowed)[number]): void {
    this.calls.push(call);
    if (!this.scenario.allowed.includes(call)) throw new Error(`unexpected call to ${call}`);
  }
}

function codedError(code: KeychainErrorCode, message: string): Error {
  return Object.assign(new Error(message), { code });
}

function enclaveKey(key: KeyObject): NativeEnclaveKey {
  return {
    publicKey: () => rawP256PublicKey(key),
    sign: async (data) => new Uint8Array(sign("sha256", data, { key, dsaEncoding: "der" })),
  };
}

const logger = pino({ level: "silent" });

/** A logger whose records the test can read. */
function recordingLogger(): {
  logger: Logger;
  records: Array<{ level: number; msg: string; [key: string]: unknown }>;
} {
  const records: Array<{ level: number; msg: string }> = [];
  return {
    logger: pino({ level: "debug" }, { write: (line: string) => records.push(JSON.parse(line)) }),
    records,
  };
}
const WARN = 40;
const ERROR = 50;
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

  it("shows the missing-entitlement warning for the addon's plain coded Error, no KeychainError", async () => {
    const keychain = new StrictKeychain({
      available: true,
      persistentError: "missing_entitlement",
      allowed: ["secureEnclaveAvailable", "loadOrCreatePersistentKey", "createEphemeralKey"],
    });
    const thrown = await keychain
      .loadOrCreatePersistentKey({ accessGroup: DEFAULT_ACCESS_GROUP, label: "x" })
      .then(
        () => undefined,
        (error: unknown) => error,
      );
    expect(thrown).not.toBeInstanceOf(KeychainError);
    expect(keychainErrorCode(thrown)).toBe("missing_entitlement");

    const { logger: recording, records } = recordingLogger();
    const signer = await createAttestationSigner({
      dataDir,
      platform: "darwin",
      addon: keychain,
      logger: recording,
    });
    expect(signer.persistent).toBe(false);
    const warnings = records.filter((r) => r.level === WARN);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ code: "missing_entitlement", accessGroup: DEFAULT_ACCESS_GROUP });
    expect(warnings[0]!.msg).toMatch(/not signed with the keychain access group entitlement/);
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

  it("shows no entitlement warning for other failures, whatever carries the code", async () => {
    const keychain = new StrictKeychain({
      available: true,
      persistentError: "interaction_not_allowed",
      allowed: ["secureEnclaveAvailable", "loadOrCreatePersistentKey", "createEphemeralKey"],
    });
    const { logger: recording, records } = recordingLogger();
    await createAttestationSigner({ dataDir, platform: "darwin", addon: keychain, logger: recording });
    const warning = records.find((r) => r.level === WARN);
    expect(warning).toMatchObject({ code: "interaction_not_allowed" });
    expect(warning!.msg).toMatch(/persistent Secure Enclave key is unavailable/);
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

/** The keychain logic of @darkbloom/native over its strict fake of the Security calls. */
describe("createAttestationSigner over the native keychain logic", () => {
  const teamSigned = () => new FakeKeychain({ entitledGroups: [DEFAULT_ACCESS_GROUP] });

  it("a team-signed build gets the persistent enclave key, the same one on every start", async () => {
    const fake = teamSigned();
    const addon = createKeychain(fake);
    const a = await createAttestationSigner({ dataDir, platform: "darwin", addon, logger });
    const b = await createAttestationSigner({ dataDir, platform: "darwin", addon, logger });
    expect([a.kind, a.persistent]).toEqual(["secure_enclave", true]);
    expect(b.publicKey()).toEqual(a.publicKey());
    expect(fake.storedKeys(DEFAULT_ACCESS_GROUP, DEFAULT_KEY_LABEL)).toHaveLength(1);
    const data = new TextEncoder().encode("attestation");
    expect(verifyP256(a.publicKey(), data, await b.sign(data))).toBe(true);
  });

  it("a stock node (no entitlement) gets an ephemeral enclave key and the entitlement warning", async () => {
    const fake = new FakeKeychain();
    const { logger: recording, records } = recordingLogger();
    const signer = await createAttestationSigner({
      dataDir,
      platform: "darwin",
      addon: createKeychain(fake),
      logger: recording,
    });
    expect([signer.kind, signer.persistent]).toEqual(["secure_enclave", false]);
    expect(fake.storedKeys()).toEqual([]);
    const warnings = records.filter((r) => r.level === WARN);
    expect(warnings.map((w) => w.code)).toEqual(["missing_entitlement"]);
    expect(warnings[0]!.msg).toMatch(/not signed with the keychain access group entitlement/);
  });

  it("falls back from the persistent key to an ephemeral one, then to the software key", async () => {
    // Where macOS also refuses unentitled processes ephemeral enclave keys, nothing enclave-backed is left.
    const fake = new FakeKeychain({ ephemeralNeedsEntitlement: true });
    const { logger: recording, records } = recordingLogger();
    const signer = await createAttestationSigner({
      dataDir,
      platform: "darwin",
      addon: createKeychain(fake),
      logger: recording,
    });
    expect(signer).toBeInstanceOf(SoftwareSigner);
    const warnings = records.filter((r) => r.level === WARN);
    expect(warnings.map((w) => [w.code, w.msg])).toEqual([
      ["missing_entitlement", expect.stringMatching(/ephemeral Secure Enclave key/)],
      ["missing_entitlement", expect.stringMatching(/using the software key/)],
    ]);
  });

  it("without a Secure Enclave, or without the addon, says why it uses the software key", async () => {
    const { logger: recording, records } = recordingLogger();
    const noEnclave = new FakeKeychain({ secureEnclave: false, entitledGroups: [DEFAULT_ACCESS_GROUP] });
    expect(
      await createAttestationSigner({
        dataDir,
        platform: "darwin",
        addon: createKeychain(noEnclave),
        logger: recording,
      }),
    ).toBeInstanceOf(SoftwareSigner);
    expect(noEnclave.calls.map((c) => c.name)).toEqual(["createKey"]);
    expect(records.at(-1)!.msg).toMatch(/no usable Secure Enclave/);
    // Here (Linux) the addon cannot load: the daemon on "macOS" says so and uses the software key.
    expect(await createAttestationSigner({ dataDir, platform: "darwin", logger: recording })).toBeInstanceOf(
      SoftwareSigner,
    );
    expect(records.at(-1)).toMatchObject({ level: WARN, reason: expect.stringMatching(/macOS only/) });
  });

  it("a persistent key that disappears: coded failures without a crash, and a new key at the next start", async () => {
    const fake = teamSigned();
    const addon = createKeychain(fake);
    const { logger: recording, records } = recordingLogger();
    const signer = await createAttestationSigner({ dataDir, platform: "darwin", addon, logger: recording });
    const data = new TextEncoder().encode("challenge");
    expect(verifyP256(signer.publicKey(), data, await signer.sign(data))).toBe(true);

    expect(fake.removeKeys(DEFAULT_ACCESS_GROUP, DEFAULT_KEY_LABEL)).toBe(1);
    const first = await signer.sign(data).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(keychainErrorCode(first)).toBe("key_not_found");
    expect((first as Error).message).toMatch(/restart the daemon/);
    const signs = fake.calls.filter((c) => c.name === "sign").length;
    // Later signatures fail at once with the same code, without asking the enclave again.
    await expect(signer.sign(data)).rejects.toMatchObject({ code: "key_not_found" });
    expect(fake.calls.filter((c) => c.name === "sign")).toHaveLength(signs);
    expect(records.filter((r) => r.level === ERROR)).toHaveLength(1);

    const restarted = await createAttestationSigner({ dataDir, platform: "darwin", addon, logger });
    expect(restarted.persistent).toBe(true);
    expect(restarted.publicKey()).not.toEqual(signer.publicKey());
    expect(verifyP256(restarted.publicKey(), data, await restarted.sign(data))).toBe(true);
    expect(fake.storedKeys()).toHaveLength(1);
  });

  it("other signing failures pass through unchanged and do not retire the key", async () => {
    const fake = teamSigned();
    const signer = await createAttestationSigner({
      dataDir,
      platform: "darwin",
      addon: createKeychain(fake),
      logger,
    });
    fake.failNext("sign", { status: -25308 });
    await expect(signer.sign(new Uint8Array([1]))).rejects.toMatchObject({ code: "interaction_not_allowed" });
    const data = new Uint8Array([2]);
    expect(verifyP256(signer.publicKey(), data, await signer.sign(data))).toBe(true);
  });
});
