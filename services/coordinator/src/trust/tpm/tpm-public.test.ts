import { createPublicKey, generateKeyPairSync, X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { rawP256PublicKey } from "@darkbloom/protocol";
import { type SoftwareTpm, softwareTpmTestable, startSoftwareTpm } from "@darkbloom/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TPM_ALG, TPM_ECC_NIST_P256 } from "./constants.js";
import { TpmFormatError } from "./errors.js";
import { attestationKeyProblem, ecPublicPoint, parseTpmtPublic, tpmObjectName } from "./tpm-public.js";

/**
 * AK public areas and names against what a real TPM (swtpm) and tpm2-tools make: an AK by
 * tpm2_createak (a child of the EK), one by tpm2_createprimary in the endorsement hierarchy with the
 * provider's template, and the RSA EK.
 */

/** The provider's AK attributes: fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|restricted|sign. */
const AK_ATTRIBUTES = 0x00050072;

describe.skipIf(!softwareTpmTestable())("TPMT_PUBLIC", () => {
  let tpm: SoftwareTpm;
  /** tpm2-tools writes TPM2B_PUBLIC: the 2-byte size, then the TPMT_PUBLIC. */
  const publicArea = async (file: string) => (await readFile(join(tpm.workDir, file))).subarray(2);
  const bytes = async (file: string) => new Uint8Array(await readFile(join(tpm.workDir, file)));

  beforeAll(async () => {
    tpm = await startSoftwareTpm();
    // No resource manager: each command's transient objects are flushed after it (contexts stay saved).
    const tool = (...args: string[]) => tpm.tool(args, { flushObjects: true });
    await tool("tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub");
    await tool(
      ..."tpm2_createak -C ek.ctx -c ak.ctx -G ecc256 -g sha256 -s ecdsa -u ak.pub -n ak.name".split(" "),
    );
    await tool("tpm2_readpublic", "-c", "ak.ctx", "-f", "pem", "-o", "ak.pem");
    await tool(
      ..."tpm2_createprimary -C e -g sha256 -G ecc256:ecdsa-sha256:null -c primary-ak.ctx -a".split(" "),
      "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign",
    );
    await tool("tpm2_readpublic", "-c", "primary-ak.ctx", "-o", "primary-ak.pub", "-n", "primary-ak.name");
  });

  afterAll(async () => {
    await tpm?.stop();
  });

  it("names an AK as the TPM does (tpm2_createak's name file)", async () => {
    const area = await publicArea("ak.pub");
    const name = tpmObjectName(area);
    expect(Buffer.from(name).toString("hex")).toBe(Buffer.from(await bytes("ak.name")).toString("hex"));
    expect(name.subarray(0, 2)).toEqual(Uint8Array.of(0x00, 0x0b));
    expect(name).toHaveLength(34);
  });

  it("names and accepts an AK made as a primary in the endorsement hierarchy with the provider's template", async () => {
    const area = await publicArea("primary-ak.pub");
    expect(Buffer.from(tpmObjectName(area))).toEqual(Buffer.from(await bytes("primary-ak.name")));
    const pub = parseTpmtPublic(area);
    expect(pub.objectAttributes).toBe(AK_ATTRIBUTES);
    expect(attestationKeyProblem(pub)).toBeUndefined();
  });

  it("parses the AK and accepts it; its point is the key tpm2_readpublic exports", async () => {
    const pub = parseTpmtPublic(await publicArea("ak.pub"));
    expect(pub.type).toBe(TPM_ALG.ECC);
    expect(pub.nameAlg).toBe(TPM_ALG.SHA256);
    expect(pub.objectAttributes).toBe(AK_ATTRIBUTES);
    expect(pub.authPolicy).toHaveLength(0);
    expect(pub.rsa).toBeUndefined();
    expect(pub.ecc).toMatchObject({
      symmetric: TPM_ALG.NULL,
      scheme: TPM_ALG.ECDSA,
      schemeHash: TPM_ALG.SHA256,
      curve: TPM_ECC_NIST_P256,
      kdf: TPM_ALG.NULL,
    });
    expect(attestationKeyProblem(pub)).toBeUndefined();
    const exported = rawP256PublicKey(createPublicKey(await readFile(join(tpm.workDir, "ak.pem"))));
    expect(Buffer.from(ecPublicPoint(pub))).toEqual(Buffer.from(exported));
  });

  it("parses the RSA EK (the key its certificate holds) and refuses it as an AK", async () => {
    const pub = parseTpmtPublic(await publicArea("ek.pub"));
    expect(pub.type).toBe(TPM_ALG.RSA);
    expect(pub.rsa).toMatchObject({
      symmetric: TPM_ALG.AES,
      scheme: TPM_ALG.NULL,
      keyBits: 2048,
      exponent: 0,
    });
    // tpm2_createek's default RSA template is the one swtpm_setup certified.
    const certified = new X509Certificate(await tpm.readEkCertificate()).publicKey.export({
      format: "jwk",
    }).n;
    expect(Buffer.from(pub.rsa?.modulus ?? []).toString("base64url")).toBe(certified);
    expect(attestationKeyProblem(pub)).toMatch(/not an ECC key/);
    expect(() => ecPublicPoint(pub)).toThrow(TpmFormatError);
  });

  describe("refuses an AK that is not one (the real AK, one field changed)", () => {
    /** The AK's TPMT_PUBLIC: type 0, nameAlg 2, attributes 4, authPolicy 8 (empty), then the ECC parms. */
    async function mutated(change: (view: DataView) => void) {
      const area = new Uint8Array(await publicArea("ak.pub"));
      change(new DataView(area.buffer, area.byteOffset, area.byteLength));
      return parseTpmtPublic(area);
    }
    const ATTRIBUTES = 4;
    // authPolicy is empty: symmetric at 10, scheme at 12, its hash at 14, curve at 16, kdf at 18, then
    // x's size at 20 and its bytes from 22.
    const SCHEME_HASH = 14;
    const CURVE = 16;
    const X = 22;

    const required = [
      ["fixedTPM", 0x2],
      ["fixedParent", 0x10],
      ["sensitiveDataOrigin", 0x20],
      ["userWithAuth", 0x40],
      ["restricted", 0x10000],
      ["sign", 0x40000],
    ] as const;
    const cases: [string, (view: DataView) => void, RegExp][] = [
      ["a decryption key", (v) => v.setUint32(ATTRIBUTES, AK_ATTRIBUTES | 0x20000), /decrypt/],
      ...required.map(([name, bit]): [string, (view: DataView) => void, RegExp] => [
        `${name} missing`,
        (v) => v.setUint32(ATTRIBUTES, AK_ATTRIBUTES & ~bit),
        new RegExp(`lacks the attributes ${name}$`),
      ]),
      ["nameAlg SHA-1", (v) => v.setUint16(2, TPM_ALG.SHA1), /nameAlg/],
      ["ECDSA with SHA-384", (v) => v.setUint16(SCHEME_HASH, TPM_ALG.SHA384), /ECDSA with SHA-256/],
      ["curve P-384", (v) => v.setUint16(CURVE, 0x0004), /curve/],
      ["a point off the curve", (v) => v.setUint8(X, v.getUint8(X) ^ 1), /not on P-256/],
    ];

    it.each(cases)("%s", async (_, change, reason) => {
      expect(attestationKeyProblem(await mutated(change))).toMatch(reason);
    });

    it("an RSA key is not an AK", async () => {
      const line = "tpm2_createak -C ek.ctx -c rsa-ak.ctx -G rsa2048 -g sha256 -s rsassa -u rsa-ak.pub";
      await tpm.tool(line.split(" "), { flushObjects: true });
      const pub = parseTpmtPublic(await publicArea("rsa-ak.pub"));
      expect(pub.rsa).toMatchObject({ scheme: TPM_ALG.RSASSA, schemeHash: TPM_ALG.SHA256, keyBits: 2048 });
      expect(attestationKeyProblem(pub)).toMatch(/not an ECC key/);
    });
  });

  it("names an object with another nameAlg as the TPM does (SHA-384)", async () => {
    await tpm.tool("tpm2_createprimary -C o -g sha384 -G ecc256 -c sha384.ctx".split(" "), {
      flushObjects: true,
    });
    await tpm.tool("tpm2_readpublic -c sha384.ctx -o sha384.pub -n sha384.name".split(" "), {
      flushObjects: true,
    });
    const name = tpmObjectName(await publicArea("sha384.pub"));
    expect(Buffer.from(name)).toEqual(Buffer.from(await bytes("sha384.name")));
    expect(name.subarray(0, 2)).toEqual(Uint8Array.of(0x00, 0x0c));
  });

  it("left-pads a short coordinate: the TPM may marshal x or y without its leading zero bytes", () => {
    let point: Uint8Array;
    do {
      point = rawP256PublicKey(generateKeyPairSync("ec", { namedCurve: "prime256v1" }).publicKey);
    } while (point[1] !== 0);
    const pub = {
      type: TPM_ALG.ECC,
      nameAlg: TPM_ALG.SHA256,
      objectAttributes: AK_ATTRIBUTES,
      authPolicy: new Uint8Array(0),
      ecc: {
        symmetric: TPM_ALG.NULL,
        scheme: TPM_ALG.ECDSA,
        schemeHash: TPM_ALG.SHA256,
        curve: TPM_ECC_NIST_P256,
        kdf: TPM_ALG.NULL,
        x: point.subarray(2, 33),
        y: point.subarray(33),
      },
    };
    expect(Buffer.from(ecPublicPoint(pub))).toEqual(Buffer.from(point));
    expect(attestationKeyProblem(pub)).toBeUndefined();
  });

  it("skips ECDAA's commit count (the only scheme with more than a hash)", async () => {
    const area = await publicArea("ak.pub");
    // The scheme (at 12) and its hash (at 14), then the count, then the rest.
    const ecdaa = Buffer.concat([area.subarray(0, 16), Buffer.of(0x00, 0x01), area.subarray(16)]);
    ecdaa.writeUInt16BE(TPM_ALG.ECDAA, 12);
    const pub = parseTpmtPublic(ecdaa);
    expect(pub.ecc).toMatchObject({
      scheme: TPM_ALG.ECDAA,
      schemeHash: TPM_ALG.SHA256,
      curve: TPM_ECC_NIST_P256,
    });
    expect(attestationKeyProblem(pub)).toMatch(/not ECDSA with SHA-256/);
  });

  it("throws TpmFormatError on every truncation, a trailing byte, and an object type it does not know", async () => {
    const area = await publicArea("ak.pub");
    for (let length = 0; length < area.length; length++) {
      expect(() => parseTpmtPublic(area.subarray(0, length)), `length ${length}`).toThrow(TpmFormatError);
    }
    expect(() => parseTpmtPublic(Buffer.concat([area, Buffer.of(0)]))).toThrow(/trailing/);
    expect(() => tpmObjectName(Buffer.concat([area, Buffer.of(0)]))).toThrow(TpmFormatError);
    const keyedHash = Buffer.from(area);
    keyedHash.writeUInt16BE(TPM_ALG.KEYEDHASH, 0);
    expect(() => parseTpmtPublic(keyedHash)).toThrow(/neither RSA nor ECC/);
    const unknownScheme = Buffer.from(area);
    unknownScheme.writeUInt16BE(0x0099, 12);
    expect(() => parseTpmtPublic(unknownScheme)).toThrow(/unknown scheme/);
  });
});
