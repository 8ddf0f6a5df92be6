import { createPrivateKey, diffieHellman, generateKeyPairSync } from "node:crypto";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { loadOrCreateIdentity, rawX25519PublicKey } from "./identity.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "darkbloom-identity-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("provider identity", () => {
  it("generates a real X25519 key pair (0600) and a machine id once, then reuses them", async () => {
    const first = await loadOrCreateIdentity(dir);
    expect(first.encryptionKey.publicKey).toHaveLength(32);
    expect(first.machineId).toMatch(/^dbp-[0-9a-f-]{36}$/);
    const file = await stat(join(dir, "encryption-key.pem"));
    expect(file.mode & 0o777).toBe(0o600);
    expect(await readFile(join(dir, "encryption-key.pem"), "utf8")).toMatch(/^-----BEGIN PRIVATE KEY-----/);

    const second = await loadOrCreateIdentity(dir);
    expect(second.machineId).toBe(first.machineId);
    expect(Buffer.from(second.encryptionKey.publicKey)).toEqual(Buffer.from(first.encryptionKey.publicKey));

    // The key works for X25519 key agreement with a peer.
    const peer = generateKeyPairSync("x25519");
    const ours = diffieHellman({ privateKey: second.encryptionKey.privateKey, publicKey: peer.publicKey });
    const theirs = diffieHellman({
      privateKey: peer.privateKey,
      publicKey: createPrivateKey(await readFile(join(dir, "encryption-key.pem"))),
    });
    expect(ours).toEqual(theirs);
    expect(rawX25519PublicKey(peer.privateKey)).toHaveLength(32);
  });

  it("tightens a key file readable by others, and refuses one that holds no X25519 key", async () => {
    await loadOrCreateIdentity(dir);
    const { chmod } = await import("node:fs/promises");
    await chmod(join(dir, "encryption-key.pem"), 0o644);
    await loadOrCreateIdentity(dir);
    expect((await stat(join(dir, "encryption-key.pem"))).mode & 0o777).toBe(0o600);

    const ed = generateKeyPairSync("ed25519").privateKey.export({ format: "pem", type: "pkcs8" });
    await writeFile(join(dir, "encryption-key.pem"), ed);
    await expect(loadOrCreateIdentity(dir)).rejects.toThrow(/holds a ed25519 key, expected x25519/);
    await writeFile(join(dir, "encryption-key.pem"), "garbage");
    await expect(loadOrCreateIdentity(dir)).rejects.toThrow(/does not hold a private key/);
  });
});
