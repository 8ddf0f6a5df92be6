import { execFile, spawnSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { type SoftwareTpm, softwareTpmTestable, startSoftwareTpm } from "@darkbloom/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EkTrustStore, verifyEkCertificate } from "./ek-certificate.js";
import { parseTpmtPublic } from "./tpm-public.js";

/**
 * EK certificates as a manufactured TPM holds them (swtpm_setup with its local CA: a root, an
 * intermediate that issues EK certificates), against that CA's bundle and a foreign one.
 */

const run = promisify(execFile);

function pemBlocks(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
}

const EXTENSIONS = [
  "basicConstraints=critical,CA:TRUE",
  "keyUsage=critical,keyCertSign",
  "subjectKeyIdentifier=none",
  "authorityKeyIdentifier=none",
  "",
].join("\n");

/** openssl re-issues a certificate for one test: the harness does not need it. */
const hasOpenssl = spawnSync("openssl", ["version"]).status === 0;

describe.skipIf(!softwareTpmTestable())("verifyEkCertificate", () => {
  let tpm: SoftwareTpm;
  let foreign: SoftwareTpm;
  let ekDer: Uint8Array;
  let store: EkTrustStore;
  let rootPem: string;
  let intermediatePem: string;

  beforeAll(async () => {
    [tpm, foreign] = await Promise.all([startSoftwareTpm(), startSoftwareTpm()]);
    ekDer = await tpm.readEkCertificate();
    store = EkTrustStore.fromPem(tpm.ca.bundlePem);
    [rootPem = "", intermediatePem = ""] = pemBlocks(tpm.ca.bundlePem);
  });

  afterAll(async () => {
    await Promise.all([tpm?.stop(), foreign?.stop()]);
  });

  it("accepts the TPM's EK certificate under its CA, with the TPM's EK and its manufacturer", async () => {
    const verdict = verifyEkCertificate(ekDer, store);
    if (!verdict.ok) throw new Error(verdict.message);
    expect(verdict.issuer).toBe("CN=swtpm-localca");
    // swtpm reports IBM's TPM vendor id (0x00001014).
    expect(verdict.manufacturer).toBe("id:00001014");
    // The key is the one in the TPM at the EK's persistent handle.
    await tpm.tool(["tpm2_readpublic", "-c", "0x81010001", "-o", "ek.pub"]);
    const ek = parseTpmtPublic((await readFile(join(tpm.workDir, "ek.pub"))).subarray(2));
    const n = verdict.publicKey.export({ format: "jwk" }).n;
    expect(n).toBe(Buffer.from(ek.rsa?.modulus ?? []).toString("base64url"));
    expect(verdict.publicKey.asymmetricKeyDetails?.modulusLength).toBe(2048);
  });

  it("refuses it under another CA (tpm_unknown_ek_ca), and accepts the other TPM's there", async () => {
    const foreignStore = EkTrustStore.fromPem(foreign.ca.bundlePem);
    expect(verifyEkCertificate(ekDer, foreignStore)).toMatchObject({ ok: false, code: "tpm_unknown_ek_ca" });
    expect(verifyEkCertificate(await foreign.readEkCertificate(), foreignStore).ok).toBe(true);
    expect(verifyEkCertificate(await foreign.readEkCertificate(), store)).toMatchObject({
      ok: false,
      code: "tpm_unknown_ek_ca",
    });
  });

  it("needs the issuing intermediate in the store: the root alone is not enough; the intermediate alone is", () => {
    expect(store.size).toBe(2);
    const rootOnly = EkTrustStore.fromPem(rootPem);
    expect(verifyEkCertificate(ekDer, rootOnly)).toMatchObject({
      ok: false,
      code: "tpm_unknown_ek_ca",
      message: expect.stringContaining("CN=swtpm-localca"),
    });
    expect(verifyEkCertificate(ekDer, EkTrustStore.fromPem(intermediatePem)).ok).toBe(true);
  });

  it("refuses it outside its validity (tpm_bad_ek_certificate)", () => {
    const notBefore = new Date(new X509Certificate(ekDer).validFrom);
    expect(verifyEkCertificate(ekDer, store, new Date(notBefore.getTime() - 1_000))).toMatchObject({
      ok: false,
      code: "tpm_bad_ek_certificate",
      message: expect.stringMatching(/not valid before/),
    });
    expect(verifyEkCertificate(ekDer, store, new Date(notBefore.getTime() + 1_000)).ok).toBe(true);
    // swtpm's certificates run to 9999-12-31T23:59:59Z (GeneralizedTime).
    expect(verifyEkCertificate(ekDer, store, new Date("9999-12-31T23:59:59Z")).ok).toBe(true);
    expect(verifyEkCertificate(ekDer, store, new Date("+010000-01-01T00:00:00Z"))).toMatchObject({
      ok: false,
      code: "tpm_bad_ek_certificate",
      message: "the EK certificate expired at 9999-12-31T23:59:59.000Z",
    });
  });

  it("refuses garbage, a truncated certificate, a forged signature and an ECC EK (tpm_bad_ek_certificate)", async () => {
    const bad = { ok: false, code: "tpm_bad_ek_certificate" };
    expect(verifyEkCertificate(new Uint8Array(0), store)).toMatchObject(bad);
    expect(verifyEkCertificate(Buffer.from("not a certificate"), store)).toMatchObject(bad);
    expect(verifyEkCertificate(ekDer.subarray(0, ekDer.length - 1), store)).toMatchObject(bad);
    expect(verifyEkCertificate(Buffer.concat([ekDer, Buffer.of(0)]), store)).toMatchObject(bad);
    const forged = Buffer.from(ekDer);
    forged[forged.length - 1]! ^= 0x01;
    expect(verifyEkCertificate(forged, store)).toMatchObject({
      ...bad,
      message: expect.stringMatching(/signature/),
    });
    // A CA certificate is no EK certificate, whoever issued it.
    const intermediate = new X509Certificate(intermediatePem).raw;
    expect(verifyEkCertificate(intermediate, store)).toMatchObject({
      ...bad,
      message: expect.stringMatching(/a CA/),
    });
    const ecc = verifyEkCertificate(await tpm.readEkCertificate("ecc"), store);
    expect(ecc).toMatchObject({ ...bad, message: expect.stringMatching(/only RSA 2048.*secp384r1/) });
  });

  it.skipIf(!hasOpenssl)(
    "refuses an EK certificate whose only issuer in the store has expired (tpm_unknown_ek_ca)",
    async () => {
      // The same intermediate (name and key), re-issued by the root for one day. Without a key identifier:
      // openssl would derive one that differs from swtpm's, and the EK certificate names swtpm's.
      const ca = (file: string) => join(tpm.ca.dir, file);
      const work = (file: string) => join(tpm.workDir, file);
      await writeFile(work("ext.cnf"), EXTENSIONS);
      const subject = "/CN=swtpm-localca";
      await run("openssl", [
        "req",
        "-new",
        "-key",
        ca("signkey.pem"),
        "-subj",
        subject,
        "-out",
        work("short.csr"),
      ]);
      const issuer = [
        "-CA",
        ca("swtpm-localca-rootca-cert.pem"),
        "-CAkey",
        ca("swtpm-localca-rootca-privkey.pem"),
      ];
      const days = ["-days", "1", "-set_serial", "99", "-extfile", work("ext.cnf")];
      await run("openssl", [
        "x509",
        "-req",
        "-in",
        work("short.csr"),
        ...issuer,
        ...days,
        "-out",
        work("short.pem"),
      ]);
      const shortLived = await readFile(work("short.pem"), "utf8");
      const inTwoDays = new Date(Date.now() + 2 * 86_400_000);
      expect(verifyEkCertificate(ekDer, EkTrustStore.fromPem(shortLived)).ok).toBe(true);
      expect(verifyEkCertificate(ekDer, EkTrustStore.fromPem(shortLived), inTwoDays)).toMatchObject({
        ok: false,
        code: "tpm_unknown_ek_ca",
        message: expect.stringMatching(/not valid at/),
      });
      // Another issuer of the same name that is still valid will do.
      expect(
        verifyEkCertificate(ekDer, EkTrustStore.fromPem(shortLived + intermediatePem), inTwoDays).ok,
      ).toBe(true);
    },
  );

  it("builds a store from CA certificates only", async () => {
    expect(() => EkTrustStore.fromPem("")).toThrow(/no certificate/);
    expect(() =>
      EkTrustStore.fromPem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"),
    ).toThrow(/certificate 1/);
    const ekPem = new X509Certificate(ekDer).toString();
    expect(() => EkTrustStore.fromPem(`${tpm.ca.bundlePem}${ekPem}`)).toThrow(
      /certificate 3: CN=unknown is not a CA/,
    );
  });
});
