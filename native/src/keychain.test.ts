import { createPublicKey, verify } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  classifyStatus,
  createEphemeralKey,
  createKeychain,
  type EnclaveKey,
  type KeychainErrorCode,
  type KeychainPrimitives,
  KeychainStatusError,
  keychainErrorCode,
  loadNativeKeychain,
  loadOrCreatePersistentKey,
  OSStatus,
  secureEnclaveAvailable,
} from "./keychain.js";
import { FakeKeychain } from "./testing/index.js";

const GROUP = "SLDQ2GJ6TL.io.darkbloom.provider";
const LABEL = "io.darkbloom.provider.attestation-signing.v1";
const OTHER_GROUP = "ABCDE12345.com.example.other";
const TEAM = { entitledGroups: [GROUP] };

function verifies(key: EnclaveKey, data: Uint8Array, signature: Uint8Array): boolean {
  const point = key.publicKey();
  const jwk = {
    kty: "EC",
    crv: "P-256",
    x: Buffer.from(point.subarray(1, 33)).toString("base64url"),
    y: Buffer.from(point.subarray(33, 65)).toString("base64url"),
  };
  return verify(
    "sha256",
    data,
    { key: createPublicKey({ key: jwk, format: "jwk" }), dsaEncoding: "der" },
    signature,
  );
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => expect.unreachable("expected a rejection"),
    (error: unknown) => error,
  );
}

const names = (fake: FakeKeychain) => fake.calls.map((c) => c.name);

describe("loadOrCreatePersistentKey", () => {
  it("creates the key only when the lookup says item-not-found, in the team group, and signs with it", async () => {
    const fake = new FakeKeychain(TEAM);
    const key = await createKeychain(fake).loadOrCreatePersistentKey({ accessGroup: GROUP, label: LABEL });
    expect(names(fake)).toEqual(["copyKeys", "createKey", "copyKeys", "publicKey"]);
    expect(fake.calls[1]!.args).toEqual({
      permanent: true,
      accessGroup: GROUP,
      label: LABEL,
      useDataProtectionKeychain: true,
    });
    expect(fake.storedKeys(GROUP, LABEL).map((k) => k.publicKey)).toEqual([key.publicKey()]);
    const data = new TextEncoder().encode("attestation blob");
    expect(verifies(key, data, await key.sign(data))).toBe(true);
  });

  it("looks up first and never creates when the key exists", async () => {
    const fake = new FakeKeychain(TEAM);
    const keychain = createKeychain(fake);
    const first = await keychain.loadOrCreatePersistentKey({ accessGroup: GROUP, label: LABEL });
    fake.calls.length = 0;
    const again = await keychain.loadOrCreatePersistentKey({ accessGroup: GROUP, label: LABEL });
    expect(names(fake)).toEqual(["copyKeys", "publicKey"]);
    expect(again.publicKey()).toEqual(first.publicKey());
    expect(fake.storedKeys()).toHaveLength(1);
  });

  it("names the data-protection keychain on every query, create and delete; the fake refuses a call without it", async () => {
    const fake = new FakeKeychain(TEAM);
    const keychain = createKeychain(fake);
    await keychain.secureEnclaveAvailable();
    await keychain.loadOrCreatePersistentKey({ accessGroup: GROUP, label: LABEL });
    await keychain.createEphemeralKey();
    await keychain.deletePersistentKey({ accessGroup: GROUP, label: LABEL });
    const keychainCalls = fake.calls.filter((c) => ["copyKeys", "createKey", "deleteKeys"].includes(c.name));
    expect(new Set(keychainCalls.map((c) => c.name))).toEqual(
      new Set(["copyKeys", "createKey", "deleteKeys"]),
    );
    for (const call of keychainCalls) expect(call.args).toMatchObject({ useDataProtectionKeychain: true });

    const query = { accessGroup: GROUP, label: LABEL, useDataProtectionKeychain: false };
    await expect(fake.copyKeys(query)).rejects.toThrow(/file-based keychain/);
    await expect(fake.deleteKeys(query)).rejects.toThrow(/file-based keychain/);
    await expect(fake.createKey({ permanent: false, useDataProtectionKeychain: false })).rejects.toThrow(
      /file-based keychain/,
    );
    await expect(fake.createKey({ permanent: true, useDataProtectionKeychain: true })).rejects.toThrow(
      /accessGroup/,
    );
  });

  it("a build without the entitlement: the lookup finds nothing, the create answers -34018, nothing is stored", async () => {
    for (const fake of [new FakeKeychain(), new FakeKeychain({ entitledGroups: [OTHER_GROUP] })]) {
      const error = await rejection(
        createKeychain(fake).loadOrCreatePersistentKey({ accessGroup: GROUP, label: LABEL }),
      );
      expect(keychainErrorCode(error)).toBe("missing_entitlement");
      expect(error).toMatchObject({ status: OSStatus.missingEntitlement });
      expect(names(fake)).toEqual(["copyKeys", "createKey"]);
      expect(fake.storedKeys()).toEqual([]);
      // The ephemeral key needs no access group: the fallback still gets an enclave key.
      const ephemeral = await createKeychain(fake).createEphemeralKey();
      const data = new Uint8Array([1, 2, 3]);
      expect(verifies(ephemeral, data, await ephemeral.sign(data))).toBe(true);
    }
  });

  it("a locked keychain is interaction_not_allowed, and creates nothing", async () => {
    const fake = new FakeKeychain({ ...TEAM, locked: true });
    const error = await rejection(
      createKeychain(fake).loadOrCreatePersistentKey({ accessGroup: GROUP, label: LABEL }),
    );
    expect(error).toMatchObject({ code: "interaction_not_allowed", status: OSStatus.interactionNotAllowed });
    expect(names(fake)).toEqual(["copyKeys"]);
  });

  const lookupFailures: Array<[number, KeychainErrorCode]> = [
    [OSStatus.missingEntitlement, "missing_entitlement"],
    [OSStatus.interactionNotAllowed, "interaction_not_allowed"],
    [OSStatus.authFailed, "auth_failed"],
    [OSStatus.userCanceled, "auth_failed"],
    [OSStatus.notAvailable, "unavailable"],
    [OSStatus.param, "other"],
    [-25295, "other"],
  ];
  it.each(lookupFailures)(
    "a lookup failing with %i is thrown as %s, and no key is created",
    async (status, code) => {
      const fake = new FakeKeychain(TEAM);
      fake.failNext("copyKeys", { status, message: `SecItemCopyMatching: ${status}` });
      const error = await rejection(
        createKeychain(fake).loadOrCreatePersistentKey({ accessGroup: GROUP, label: LABEL }),
      );
      expect(error).toBeInstanceOf(KeychainStatusError);
      expect(error).toMatchObject({ code, status, message: `SecItemCopyMatching: ${status}` });
      expect(names(fake)).toEqual(["copyKeys"]);
    },
  );

  const createFailures: Array<[number, string | undefined, KeychainErrorCode]> = [
    [OSStatus.missingEntitlement, "NSOSStatusErrorDomain", "missing_entitlement"],
    [OSStatus.interactionNotAllowed, "NSOSStatusErrorDomain", "interaction_not_allowed"],
    [OSStatus.authFailed, "NSOSStatusErrorDomain", "auth_failed"],
    [OSStatus.unimplemented, "NSOSStatusErrorDomain", "unavailable"],
    [-7, "CryptoTokenKit", "unavailable"],
    [-9, "CryptoTokenKit", "interaction_not_allowed"],
    [-5, "CryptoTokenKit", "auth_failed"],
    [-3, "CryptoTokenKit", "other"],
    // The same number in another domain is not an OSStatus.
    [OSStatus.missingEntitlement, "NSCocoaErrorDomain", "other"],
  ];
  it.each(createFailures)("a create failing with %i (%s) is thrown as %s", async (status, domain, code) => {
    const fake = new FakeKeychain(TEAM);
    fake.failNext("createKey", { status, ...(domain ? { domain } : {}) });
    const error = await rejection(
      createKeychain(fake).loadOrCreatePersistentKey({ accessGroup: GROUP, label: LABEL }),
    );
    expect(error).toMatchObject({ code, status, domain });
    expect(names(fake)).toEqual(["copyKeys", "createKey"]);
  });

  it("two daemons creating at once store two keys under one label, and both settle on the older", async () => {
    // The keychain does not make a label unique: both creates succeed.
    const fake = new FakeKeychain(TEAM);
    const [a, b] = await Promise.all([
      createKeychain(fake).loadOrCreatePersistentKey({ accessGroup: GROUP, label: LABEL }),
      createKeychain(fake).loadOrCreatePersistentKey({ accessGroup: GROUP, label: LABEL }),
    ]);
    const stored = fake.storedKeys(GROUP, LABEL);
    expect(stored).toHaveLength(2);
    expect(names(fake).filter((n) => n === "createKey")).toHaveLength(2);
    const older = stored.reduce((x, y) => (y.createdAtMs < x.createdAtMs ? y : x));
    expect(a!.publicKey()).toEqual(older.publicKey);
    expect(b!.publicKey()).toEqual(older.publicKey);
    // And every later start takes the same one.
    const later = await createKeychain(fake).loadOrCreatePersistentKey({ accessGroup: GROUP, label: LABEL });
    expect(later.publicKey()).toEqual(older.publicKey);
  });

  it("keys created in the same millisecond are told apart by application label, the same way each time", async () => {
    const fake = new FakeKeychain({ ...TEAM, now: () => 1_700_000_000_000 });
    await Promise.all([
      createKeychain(fake).loadOrCreatePersistentKey({ accessGroup: GROUP, label: LABEL }),
      createKeychain(fake).loadOrCreatePersistentKey({ accessGroup: GROUP, label: LABEL }),
    ]);
    const chosen = await Promise.all(
      [1, 2, 3].map(() =>
        createKeychain(fake).loadOrCreatePersistentKey({ accessGroup: GROUP, label: LABEL }),
      ),
    );
    expect(new Set(chosen.map((k) => Buffer.from(k.publicKey()).toString("hex"))).size).toBe(1);
  });

  it("errSecDuplicateItem on create: looks up once more and takes the key another daemon stored", async () => {
    const fake = new FakeKeychain(TEAM);
    const theirs = await createKeychain(fake).loadOrCreatePersistentKey({ accessGroup: GROUP, label: LABEL });
    fake.calls.length = 0;
    // Our lookup ran before theirs stored the key; our create then collides with it.
    fake.failNext("copyKeys", { status: OSStatus.itemNotFound });
    fake.failNext("createKey", { status: OSStatus.duplicateItem, domain: "NSOSStatusErrorDomain" });
    const ours = await createKeychain(fake).loadOrCreatePersistentKey({ accessGroup: GROUP, label: LABEL });
    expect(names(fake)).toEqual(["copyKeys", "createKey", "copyKeys", "publicKey"]);
    expect(ours.publicKey()).toEqual(theirs.publicKey());
  });

  it("a key missing right after its create is key_not_found, and is not created twice", async () => {
    const fake = new FakeKeychain(TEAM);
    fake.failNext("createKey", { status: OSStatus.duplicateItem });
    const error = await rejection(
      createKeychain(fake).loadOrCreatePersistentKey({ accessGroup: GROUP, label: LABEL }),
    );
    expect(error).toMatchObject({ code: "key_not_found", status: OSStatus.itemNotFound });
    expect(names(fake)).toEqual(["copyKeys", "createKey", "copyKeys"]);
  });

  it("refuses an empty access group or label before any keychain call", async () => {
    const fake = new FakeKeychain(TEAM);
    await expect(
      createKeychain(fake).loadOrCreatePersistentKey({ accessGroup: "", label: LABEL }),
    ).rejects.toThrow(TypeError);
    await expect(
      createKeychain(fake).loadOrCreatePersistentKey({ accessGroup: GROUP, label: "" }),
    ).rejects.toThrow(TypeError);
    expect(fake.calls).toEqual([]);
  });

  it("refuses a public key that is not a 65-byte SEC1 point", async () => {
    const fake = new FakeKeychain(TEAM);
    fake.failNext("publicKey", { status: OSStatus.success, publicKey: new Uint8Array(64) });
    await expect(createKeychain(fake).createEphemeralKey()).rejects.toMatchObject({
      code: "other",
      message: expect.stringMatching(/64-byte public key/),
    });
  });
});

describe("a key that disappears", () => {
  const vanished: Array<[string, { status: number; domain?: string }]> = [
    ["errSecItemNotFound", { status: OSStatus.itemNotFound }],
    ["errSecInvalidItemRef", { status: OSStatus.invalidItemRef }],
    ["errSecInvalidKeyRef", { status: OSStatus.invalidKeyRef, domain: "NSOSStatusErrorDomain" }],
    ["CryptoTokenKit object not found", { status: -6, domain: "CryptoTokenKit" }],
  ];
  it.each(vanished)("signing after the item was deleted (%s) is key_not_found", async (_, signResult) => {
    const fake = new FakeKeychain(TEAM);
    const keychain = createKeychain(fake);
    const key = await keychain.loadOrCreatePersistentKey({ accessGroup: GROUP, label: LABEL });
    expect(fake.removeKeys(GROUP, LABEL, signResult)).toBe(1);
    const error = await rejection(key.sign(new Uint8Array([1])));
    expect(keychainErrorCode(error)).toBe("key_not_found");
    expect(error).toMatchObject({ status: signResult.status });
    // The next load finds nothing and creates a new key.
    const next = await keychain.loadOrCreatePersistentKey({ accessGroup: GROUP, label: LABEL });
    expect(next.publicKey()).not.toEqual(key.publicKey());
    expect(fake.storedKeys()).toHaveLength(1);
  });

  it("a locked keychain while signing is interaction_not_allowed, not a lost key", async () => {
    const fake = new FakeKeychain(TEAM);
    const key = await createKeychain(fake).loadOrCreatePersistentKey({ accessGroup: GROUP, label: LABEL });
    fake.locked = true;
    await expect(key.sign(new Uint8Array([1]))).rejects.toMatchObject({ code: "interaction_not_allowed" });
  });
});

describe("secureEnclaveAvailable", () => {
  it("is true when a throwaway enclave key can be made, and stores nothing", async () => {
    const fake = new FakeKeychain(TEAM);
    expect(await createKeychain(fake).secureEnclaveAvailable()).toBe(true);
    expect(fake.calls.map((c) => c.args)).toEqual([{ permanent: false, useDataProtectionKeychain: true }]);
    expect(fake.storedKeys()).toEqual([]);
  });

  it("is false without a Secure Enclave, and for an unknown failure", async () => {
    expect(
      await createKeychain(new FakeKeychain({ ...TEAM, secureEnclave: false })).secureEnclaveAvailable(),
    ).toBe(false);
    const fake = new FakeKeychain(TEAM);
    fake.failNext("createKey", { status: -26275 });
    expect(await createKeychain(fake).secureEnclaveAvailable()).toBe(false);
  });

  it("is true when the OS refused before reaching the enclave, so that the key calls say why", async () => {
    const fake = new FakeKeychain({ ephemeralNeedsEntitlement: true });
    expect(await createKeychain(fake).secureEnclaveAvailable()).toBe(true);
    const locked = new FakeKeychain(TEAM);
    locked.failNext("createKey", { status: OSStatus.interactionNotAllowed });
    expect(await createKeychain(locked).secureEnclaveAvailable()).toBe(true);
  });
});

describe("deletePersistentKey", () => {
  it("deletes every key under the label, and says false when there was none", async () => {
    const fake = new FakeKeychain(TEAM);
    const keychain = createKeychain(fake);
    await keychain.loadOrCreatePersistentKey({ accessGroup: GROUP, label: LABEL });
    expect(await keychain.deletePersistentKey({ accessGroup: GROUP, label: LABEL })).toBe(true);
    expect(fake.storedKeys()).toEqual([]);
    expect(await keychain.deletePersistentKey({ accessGroup: GROUP, label: LABEL })).toBe(false);
    await expect(
      createKeychain(new FakeKeychain()).deletePersistentKey({ accessGroup: GROUP, label: LABEL }),
    ).rejects.toMatchObject({ code: "missing_entitlement" });
  });
});

describe("keychainErrorCode", () => {
  it("reads the code of any thrown value, whatever its class", () => {
    expect(keychainErrorCode(Object.assign(new Error("x"), { code: "missing_entitlement" }))).toBe(
      "missing_entitlement",
    );
    expect(keychainErrorCode({ code: "key_not_found" })).toBe("key_not_found");
    expect(keychainErrorCode(new KeychainStatusError("auth_failed", "x", OSStatus.authFailed))).toBe(
      "auth_failed",
    );
    class Foreign extends Error {
      readonly code = "unavailable";
    }
    expect(keychainErrorCode(new Foreign())).toBe("unavailable");
  });

  it("is undefined for values without a keychain code", () => {
    for (const value of [
      undefined,
      null,
      "missing_entitlement",
      42,
      new Error("x"),
      { code: "ENOENT" },
      { code: 1 },
    ]) {
      expect(keychainErrorCode(value)).toBeUndefined();
    }
  });

  it("classifies statuses by domain: a CryptoTokenKit code is not an OSStatus", () => {
    expect(classifyStatus(-6, "CryptoTokenKit")).toBe("key_not_found");
    expect(classifyStatus(-6)).toBe("other");
    expect(classifyStatus(OSStatus.itemNotFound, "NSOSStatusErrorDomain")).toBe("key_not_found");
  });
});

describe("the module-level functions without the addon (every machine but a Mac with it built)", () => {
  it.skipIf(process.platform === "darwin")(
    "report no enclave and throw unavailable, never at import",
    async () => {
      expect(loadNativeKeychain()).toEqual({ reason: expect.stringMatching(/macOS only/) });
      expect(await secureEnclaveAvailable()).toBe(false);
      await expect(loadOrCreatePersistentKey({ accessGroup: GROUP, label: LABEL })).rejects.toMatchObject({
        code: "unavailable",
      });
      await expect(createEphemeralKey()).rejects.toMatchObject({ code: "unavailable" });
    },
  );
});

describe("createKeychain's contract with the primitives", () => {
  it("uses nothing but the five primitives", async () => {
    const fake = new FakeKeychain(TEAM);
    const used = new Set<string>();
    const spy = new Proxy(fake, {
      get(target, property, receiver) {
        used.add(String(property));
        const value = Reflect.get(target, property, receiver);
        return typeof value === "function" ? value.bind(target) : value;
      },
    }) as KeychainPrimitives;
    const keychain = createKeychain(spy);
    await keychain.secureEnclaveAvailable();
    const key = await keychain.loadOrCreatePersistentKey({ accessGroup: GROUP, label: LABEL });
    await key.sign(new Uint8Array([0]));
    await keychain.deletePersistentKey({ accessGroup: GROUP, label: LABEL });
    expect([...used].sort()).toEqual(["copyKeys", "createKey", "deleteKeys", "publicKey", "sign"]);
  });
});
