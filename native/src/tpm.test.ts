import { createHash, createPublicKey, verify, X509Certificate } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type SoftwareTpm, softwareTpmTestable, startSoftwareTpm } from "@darkbloom/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_ATTESTATION_KEY_HANDLE, loadTpmBinding, Tpm, tpmErrorCode } from "./tpm.js";

/** The addon must be built where CI says so; elsewhere its tests skip when it is not. */
function addonTestable(): boolean {
  if (loadTpmBinding()) return true;
  if (process.env.DARKBLOOM_NATIVE_REQUIRED === "1") throw new Error("the TPM addon is not built");
  return false;
}

const HANDLE = `0x${DEFAULT_ATTESTATION_KEY_HANDLE.toString(16)}`;

function p256(point: Uint8Array) {
  return createPublicKey({
    key: {
      kty: "EC",
      crv: "P-256",
      x: Buffer.from(point.subarray(1, 33)).toString("base64url"),
      y: Buffer.from(point.subarray(33)).toString("base64url"),
    },
    format: "jwk",
  });
}

describe.skipIf(!addonTestable() || !softwareTpmTestable())("the TPM addon on a software TPM", () => {
  let swtpm: SoftwareTpm;
  let tpm: Tpm;

  beforeAll(async () => {
    swtpm = await startSoftwareTpm();
    tpm = Tpm.open({ tcti: swtpm.tcti });
  });
  afterAll(async () => {
    await swtpm?.stop();
  });

  it("reads the manufacturer's EK certificate from NV", async () => {
    const der = await tpm.ekCertificate();
    expect(der).toBeDefined();
    expect(Buffer.from(der as Uint8Array).equals(Buffer.from(await swtpm.readEkCertificate("rsa")))).toBe(
      true,
    );
    expect(new X509Certificate(der as Uint8Array).publicKey.asymmetricKeyDetails?.modulusLength).toBe(2048);
  });

  it("creates the attestation key once at its persistent handle, finds it after, and derives the same key when it disappears", async () => {
    const created = await tpm.loadOrCreateAttestationKey();
    expect(created).toMatchObject({ created: true, persistent: true });
    expect(created.publicKey).toHaveLength(65);
    const found = await tpm.loadOrCreateAttestationKey();
    expect(found.created).toBe(false);
    expect(Buffer.from(found.tpmtPublic).equals(Buffer.from(created.tpmtPublic))).toBe(true);
    await swtpm.tool(["tpm2_evictcontrol", "-C", "o", "-c", HANDLE]);
    const again = await tpm.loadOrCreateAttestationKey();
    expect(again.created).toBe(true);
    expect(Buffer.from(again.publicKey).equals(Buffer.from(created.publicKey))).toBe(true);
  });

  it("signs short and long data (a hash sequence with its ticket) with ECDSA P-256 that node:crypto verifies", async () => {
    const key = p256((await tpm.loadOrCreateAttestationKey()).publicKey);
    for (const size of [4, 5, 512, 513, 4000]) {
      const data = Buffer.alloc(size, size % 251);
      expect(verify("sha256", data, key, await tpm.sign(data))).toBe(true);
    }
  });

  it("refuses to sign data that starts like a TPM-generated structure, or is too short to tell", async () => {
    for (const data of [[0xff, 0x54, 0x43, 0x47, 0, 1], [], [1, 2, 3]]) {
      const error = await tpm.sign(Buffer.from(data)).catch((e: unknown) => e);
      expect(tpmErrorCode(error)).toBe("tpm_bad_input");
    }
  });

  it("quotes PCRs 0-7 with the values read in the same generation, and the digest covers them", async () => {
    const key = p256((await tpm.loadOrCreateAttestationKey()).publicKey);
    const nonce = createHash("sha256").update("nonce").digest();
    const quote = await tpm.quote(nonce, [0, 1, 2, 3, 4, 5, 6, 7]);
    expect(verify("sha256", quote.attest, key, quote.signature)).toBe(true);
    expect(quote.pcrValues).toHaveLength(8);
    const attest = Buffer.from(quote.attest);
    // TPMS_ATTEST: magic, type TPM_ST_ATTEST_QUOTE, then the qualified signer and extraData.
    expect(attest.readUInt32BE(0)).toBe(0xff544347);
    expect(attest.readUInt16BE(4)).toBe(0x8018);
    const signerSize = attest.readUInt16BE(6);
    const extra = attest.subarray(10 + signerSize, 10 + signerSize + attest.readUInt16BE(8 + signerSize));
    expect(extra.equals(nonce)).toBe(true);
    const digest = createHash("sha256").update(Buffer.concat(quote.pcrValues)).digest();
    expect(attest.subarray(attest.length - 32).equals(digest)).toBe(true);
    await swtpm.tool(["tpm2_pcrextend", `7:sha256=${"22".repeat(32)}`]);
    const after = await tpm.quote(nonce, [0, 1, 2, 3, 4, 5, 6, 7]);
    expect(
      Buffer.from(after.pcrValues[7] as Uint8Array).equals(Buffer.from(quote.pcrValues[7] as Uint8Array)),
    ).toBe(false);
  });

  it("activates a credential tpm2_makecredential made for its EK and the key's name, and refuses one for another name", async () => {
    await tpm.loadOrCreateAttestationKey();
    const dir = swtpm.workDir;
    await swtpm.tool(["tpm2_readpublic", "-c", "0x81010001", "-o", join(dir, "ek.pub")]);
    await swtpm.tool(["tpm2_readpublic", "-c", HANDLE, "-n", join(dir, "ak.name")]);
    await swtpm.flush();
    const secret = Buffer.from("0123456789abcdef0123456789abcdef");
    await writeFile(join(dir, "secret"), secret);
    const make = async (nameHex: string) => {
      await swtpm.tool([
        "tpm2_makecredential",
        ...["-T", "none", "-u", join(dir, "ek.pub"), "-s", join(dir, "secret")],
        ...["-n", nameHex, "-o", join(dir, "cred")],
      ]);
      const file = Buffer.from(await import("node:fs/promises").then((fs) => fs.readFile(join(dir, "cred"))));
      // tpm2-tools' file: magic, version, then TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET.
      const idSize = file.readUInt16BE(8);
      return { blob: file.subarray(8, 10 + idSize), encrypted: file.subarray(10 + idSize) };
    };
    const name = Buffer.from(
      await import("node:fs/promises").then((fs) => fs.readFile(join(dir, "ak.name"))),
    );
    const good = await make(name.toString("hex"));
    expect(Buffer.from(await tpm.activateCredential(good.blob, good.encrypted)).equals(secret)).toBe(true);
    const other = Buffer.from(name);
    other[other.length - 1] = (other[other.length - 1] ?? 0) ^ 1;
    const bad = await make(other.toString("hex"));
    const error = await tpm.activateCredential(bad.blob, bad.encrypted).catch((e: unknown) => e);
    expect(tpmErrorCode(error)).toBe("tpm_activation_failed");
    const malformed = await tpm
      .activateCredential(Buffer.from([0, 9, 1]), good.encrypted)
      .catch((e: unknown) => e);
    expect(tpmErrorCode(malformed)).toBe("tpm_bad_input");
  });

  it("never uses or overwrites someone else's key at its handle", async () => {
    await swtpm.tool(["tpm2_evictcontrol", "-C", "o", "-c", HANDLE]);
    const ctx = join(swtpm.workDir, "other.ctx");
    await swtpm.tool(["tpm2_createprimary", "-C", "o", "-G", "ecc", "-c", ctx]);
    await swtpm.tool(["tpm2_evictcontrol", "-C", "o", "-c", ctx, HANDLE]);
    await swtpm.flush();
    const error = await tpm.loadOrCreateAttestationKey().catch((e: unknown) => e);
    expect(tpmErrorCode(error)).toBe("tpm_handle_in_use");
    await swtpm.tool(["tpm2_evictcontrol", "-C", "o", "-c", HANDLE]);
  });

  it("says tpm_unavailable when nothing answers at the TCTI", async () => {
    const error = await Tpm.open({ tcti: "swtpm:host=127.0.0.1,port=1" })
      .probe()
      .catch((e: unknown) => e);
    expect(tpmErrorCode(error)).toBe("tpm_unavailable");
  });
});
