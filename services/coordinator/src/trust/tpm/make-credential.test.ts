import { generateKeyPairSync, type KeyObject, randomBytes, X509Certificate } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  type SoftwareTpm,
  SoftwareTpmToolError,
  softwareTpmTestable,
  startSoftwareTpm,
} from "@darkbloom/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeCredential } from "./make-credential.js";

/**
 * MakeCredential without a TPM, checked by the only judge that matters: TPM2_ActivateCredential on a
 * real TPM (swtpm) recovers the secret for the AK it was made for, and refuses it for any other name.
 */

/** tpm2-tools' credential file (tpm2_makecredential -o, tpm2_activatecredential -i). */
function credentialFile(credential: { credentialBlob: Uint8Array; encryptedSecret: Uint8Array }): Buffer {
  const header = Buffer.alloc(8);
  header.writeUInt32BE(0xbadcc0de, 0);
  header.writeUInt32BE(1, 4);
  return Buffer.concat([header, credential.credentialBlob, credential.encryptedSecret]);
}

describe.skipIf(!softwareTpmTestable())("makeCredential", () => {
  let tpm: SoftwareTpm;
  let ekPublicKey: KeyObject;
  let akName: Buffer;
  let counter = 0;

  beforeAll(async () => {
    tpm = await startSoftwareTpm();
    const tool = (...args: string[]) => tpm.tool(args, { flushObjects: true });
    await tool("tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub");
    await tool(..."tpm2_createak -C ek.ctx -c ak.ctx -G ecc256 -g sha256 -s ecdsa -n ak.name".split(" "));
    akName = await readFile(join(tpm.workDir, "ak.name"));
    // The EK as the coordinator knows it: the key in the certificate the TPM's manufacturer issued.
    ekPublicKey = new X509Certificate(await tpm.readEkCertificate()).publicKey;
  });

  afterAll(async () => {
    await tpm?.stop();
  });

  /**
   * TPM2_ActivateCredential with the AK and the EK. The EK's authPolicy is PolicySecret(endorsement):
   * a policy session satisfied against the endorsement hierarchy authorizes it (an empty password
   * does not: TPM_RC_AUTH_UNAVAILABLE); the AK authorizes with its empty password.
   */
  async function activate(file: Uint8Array): Promise<Buffer> {
    const n = counter++;
    await writeFile(join(tpm.workDir, `credential-${n}.bin`), file);
    try {
      await tpm.tool(["tpm2_startauthsession", "--policy-session", "-S", `session-${n}.ctx`]);
      await tpm.tool(["tpm2_policysecret", "-S", `session-${n}.ctx`, "-c", "e"]);
      const line = `tpm2_activatecredential -c ak.ctx -C ek.ctx -i credential-${n}.bin -o secret-${n}.bin`;
      await tpm.tool([...line.split(" "), "-P", `session:session-${n}.ctx`], { flushObjects: true });
      return await readFile(join(tpm.workDir, `secret-${n}.bin`));
    } finally {
      await tpm.flush();
    }
  }

  it.each([1, 16, 32])("a %d-byte secret comes back from the TPM that holds the AK", async (size) => {
    const secret = randomBytes(size);
    const recovered = await activate(credentialFile(makeCredential(ekPublicKey, akName, secret)));
    expect(recovered.toString("hex")).toBe(secret.toString("hex"));
  });

  it("a credential made for another name does not activate (the outer HMAC covers the name)", async () => {
    const otherName = Buffer.concat([Buffer.of(0x00, 0x0b), randomBytes(32)]);
    const credential = makeCredential(ekPublicKey, otherName, randomBytes(32));
    const failure = await activate(credentialFile(credential)).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(SoftwareTpmToolError);
    expect((failure as SoftwareTpmToolError).stderr).toMatch(/0x1DF|integrity check failed/i);
  });

  it("a credential for another EK does not activate (the seed does not decrypt)", async () => {
    const { publicKey: otherEk } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const failure = await activate(credentialFile(makeCredential(otherEk, akName, randomBytes(32)))).catch(
      (error: unknown) => error,
    );
    expect(failure).toBeInstanceOf(SoftwareTpmToolError);
  });

  it("reads the format as tpm2_makecredential writes it: both activate, with the same sizes", async () => {
    const secret = randomBytes(32);
    await writeFile(join(tpm.workDir, "tools-secret.bin"), secret);
    const line = `tpm2_makecredential -T none -u ek.pub -s tools-secret.bin -n ${akName.toString("hex")}`;
    await tpm.tool([...line.split(" "), "-o", "tools-credential.bin"]);
    const tools = await readFile(join(tpm.workDir, "tools-credential.bin"));
    expect((await activate(tools)).toString("hex")).toBe(secret.toString("hex"));
    const ours = credentialFile(makeCredential(ekPublicKey, akName, secret));
    expect(ours.length).toBe(tools.length);
    // Header, then TPM2B_ID_OBJECT's size, then its TPM2B_DIGEST integrity HMAC's size.
    expect(ours.subarray(0, 12).toString("hex")).toBe(tools.subarray(0, 12).toString("hex"));
  });

  it("draws the seed from `random`: the blob depends on the seed, the name and the secret only", () => {
    const secret = randomBytes(32);
    const seed = (byte: number) => () => Buffer.alloc(32, byte);
    const a = makeCredential(ekPublicKey, akName, secret, seed(1));
    const b = makeCredential(ekPublicKey, akName, secret, seed(1));
    const c = makeCredential(ekPublicKey, akName, secret, seed(2));
    expect(Buffer.from(a.credentialBlob)).toEqual(Buffer.from(b.credentialBlob));
    expect(Buffer.from(a.credentialBlob)).not.toEqual(Buffer.from(c.credentialBlob));
    // RSA-OAEP is randomized by itself: the same seed wraps differently each time.
    expect(Buffer.from(a.encryptedSecret)).not.toEqual(Buffer.from(b.encryptedSecret));
    expect(a.encryptedSecret).toHaveLength(2 + 256);
    expect(() => makeCredential(ekPublicKey, akName, secret, () => Buffer.alloc(16))).toThrow(RangeError);
  });

  it("refuses what it cannot make a credential for", () => {
    const { publicKey: ecKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
    const { publicKey: rsa3072 } = generateKeyPairSync("rsa", { modulusLength: 3072 });
    expect(() => makeCredential(ecKey, akName, randomBytes(32))).toThrow(/RSA 2048/);
    expect(() => makeCredential(rsa3072, akName, randomBytes(32))).toThrow(/RSA 2048/);
    expect(() => makeCredential(ekPublicKey, akName, new Uint8Array(0))).toThrow(/1 to 32 bytes/);
    expect(() => makeCredential(ekPublicKey, akName, randomBytes(33))).toThrow(/1 to 32 bytes/);
    expect(() => makeCredential(ekPublicKey, akName.subarray(0, 33), randomBytes(32))).toThrow(/name/);
    expect(() => makeCredential(ekPublicKey, Buffer.alloc(34), randomBytes(32))).toThrow(/name/);
  });
});
