import { generateKeyPairSync } from "node:crypto";
import { chmod, chown, lstat, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { verifyP256 } from "@darkbloom/protocol";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AttestationKeyError } from "./signer.js";
import { attestationKeyPath, SoftwareSigner } from "./software-signer.js";

let dataDir: string;
beforeEach(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "darkbloom-keys-"));
});
afterEach(async () => {
  await rm(dataDir, { recursive: true, force: true });
});

const isRoot = process.getuid?.() === 0;

describe("SoftwareSigner", () => {
  it("creates <dataDir>/keys/attestation.pem (dir 0700, file 0600) and loads the same key again", async () => {
    const signer = await SoftwareSigner.loadOrCreate(dataDir);
    const path = attestationKeyPath(dataDir);
    expect(path).toBe(join(dataDir, "keys", "attestation.pem"));
    expect((await lstat(join(dataDir, "keys"))).mode & 0o777).toBe(0o700);
    expect((await lstat(path)).mode & 0o777).toBe(0o600);
    expect(await readFile(path, "utf8")).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    expect(signer.kind).toBe("software");
    expect(signer.persistent).toBe(true);
    const again = await SoftwareSigner.loadOrCreate(dataDir);
    expect(again.publicKey()).toEqual(signer.publicKey());
    const data = new TextEncoder().encode("attest me");
    expect(verifyP256(signer.publicKey(), data, await again.sign(data))).toBe(true);
  });

  it("refuses a key file readable by group or others, saying how to fix it", async () => {
    await SoftwareSigner.loadOrCreate(dataDir);
    const path = attestationKeyPath(dataDir);
    await chmod(path, 0o640);
    const error = await SoftwareSigner.loadOrCreate(dataDir).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AttestationKeyError);
    expect((error as Error).message).toBe(
      `the attestation key file ${path} is accessible to group or others (mode 0640); run: chmod 600 ${path}`,
    );
    await chmod(path, 0o604);
    await expect(SoftwareSigner.loadOrCreate(dataDir)).rejects.toThrow(/mode 0604/);
    await chmod(path, 0o400); // stricter than 0600 is fine
    await expect(SoftwareSigner.loadOrCreate(dataDir)).resolves.toBeDefined();
  });

  it("refuses a key directory readable by group or others", async () => {
    await SoftwareSigner.loadOrCreate(dataDir);
    await chmod(join(dataDir, "keys"), 0o755);
    await expect(SoftwareSigner.loadOrCreate(dataDir)).rejects.toThrow(
      `the attestation key directory ${join(dataDir, "keys")} is accessible to group or others (mode 0755); run: chmod 700 ${join(dataDir, "keys")}`,
    );
  });

  it.skipIf(!isRoot)("refuses a key file or directory owned by another user", async () => {
    await SoftwareSigner.loadOrCreate(dataDir);
    const path = attestationKeyPath(dataDir);
    await chown(path, 65534, 65534);
    await expect(SoftwareSigner.loadOrCreate(dataDir)).rejects.toThrow(
      /is owned by uid 65534, not by this user \(uid 0\)/,
    );
    await chown(path, 0, 0);
    await chown(join(dataDir, "keys"), 65534, 65534);
    await expect(SoftwareSigner.loadOrCreate(dataDir)).rejects.toThrow(/directory .* is owned by uid 65534/);
  });

  it("refuses symbolic links and keys that are not P-256, never replacing them", async () => {
    const keys = join(dataDir, "keys");
    await mkdir(keys, { mode: 0o700 });
    const elsewhere = join(dataDir, "elsewhere.pem");
    await writeFile(elsewhere, "x", { mode: 0o600 });
    await symlink(elsewhere, attestationKeyPath(dataDir));
    await expect(SoftwareSigner.loadOrCreate(dataDir)).rejects.toThrow(/is a symbolic link/);
    await rm(attestationKeyPath(dataDir));
    const { privateKey } = generateKeyPairSync("ed25519");
    const pem = privateKey.export({ format: "pem", type: "pkcs8" }).toString();
    await writeFile(attestationKeyPath(dataDir), pem, { mode: 0o600 });
    await expect(SoftwareSigner.loadOrCreate(dataDir)).rejects.toThrow(
      /holds a ed25519 key, expected a P-256/,
    );
    expect(await readFile(attestationKeyPath(dataDir), "utf8")).toBe(pem);
  });

  it("an ephemeral key is not persistent and writes nothing", async () => {
    const signer = SoftwareSigner.ephemeral();
    expect(signer.persistent).toBe(false);
    expect(signer.publicKey()).toHaveLength(65);
    await expect(lstat(join(dataDir, "keys"))).rejects.toThrow(/ENOENT/);
  });
});
