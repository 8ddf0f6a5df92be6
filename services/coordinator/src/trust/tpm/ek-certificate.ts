import { type KeyObject, X509Certificate } from "node:crypto";
import { DER_TAG, type Der, derChildren, derString, derTime, expectTag, readDer } from "./der.js";
import { TpmFormatError } from "./errors.js";
import { sameBytes } from "./marshal.js";

/**
 * The EK certificate check: the certificate a TPM manufacturer put in the TPM's NV, issued by a CA the
 * operator trusts. It vouches that the RSA key in it is a genuine TPM's endorsement key; MakeCredential
 * to that key then proves an attestation key lives in the same TPM.
 */

/**
 * The EK CAs the operator trusts (manufacturers' roots and intermediates). Every certificate is a trust
 * anchor: an EK certificate is accepted when a CA certificate in the store issued it. A manufacturer's
 * intermediate is configured beside its root, since a TPM hands over only its EK certificate.
 */
export class EkTrustStore {
  private constructor(private readonly anchors: readonly TrustAnchor[]) {}

  /**
   * The certificates of a PEM bundle. Throws when it holds none, one does not parse, or one is not a
   * CA certificate (an EK certificate pasted into the bundle by mistake would otherwise go unnoticed).
   */
  static fromPem(pem: string): EkTrustStore {
    const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
    if (blocks.length === 0) throw new Error("the EK CA bundle holds no certificate");
    const anchors = blocks.map((block, i): TrustAnchor => {
      try {
        const certificate = new X509Certificate(block);
        if (!certificate.ca) throw new Error(`${certificate.subject} is not a CA`);
        const { notBefore, notAfter } = certificateFields(certificate.raw);
        return { certificate, notBefore, notAfter };
      } catch (error) {
        throw new Error(`EK CA certificate ${i + 1}: ${(error as Error).message}`);
      }
    });
    return new EkTrustStore(anchors);
  }

  get size(): number {
    return this.anchors.length;
  }

  get certificates(): readonly X509Certificate[] {
    return this.anchors.map((anchor) => anchor.certificate);
  }

  /** The CAs whose name (and key identifier) match the certificate's issuer. */
  issuersOf(certificate: X509Certificate): readonly TrustAnchor[] {
    return this.anchors.filter((anchor) => certificate.checkIssued(anchor.certificate));
  }
}

export interface TrustAnchor {
  certificate: X509Certificate;
  notBefore: Date;
  notAfter: Date;
}

export type EkCertificateVerdict =
  | {
      ok: true;
      /** The EK's public key (RSA 2048): what MakeCredential encrypts to. */
      publicKey: KeyObject;
      /** The issuer's distinguished name. */
      issuer: string;
      /** The TPM manufacturer id from the subjectAltName (TCG EK profile: "id:" and 8 hex digits), else "". */
      manufacturer: string;
    }
  | { ok: false; code: "tpm_unknown_ek_ca" | "tpm_bad_ek_certificate"; message: string };

const bad = (message: string): EkCertificateVerdict => ({
  ok: false,
  code: "tpm_bad_ek_certificate",
  message,
});

/** subjectAltName (2.5.29.17) and tcg-at-tpmManufacturer (2.23.133.2.1), as OID contents. */
const OID_SUBJECT_ALT_NAME = Uint8Array.of(0x55, 0x1d, 0x11);
const OID_TPM_MANUFACTURER = Uint8Array.of(0x67, 0x81, 0x05, 0x02, 0x01);
/** GeneralName's directoryName: [4], constructed (Name is a CHOICE, so the tag is explicit). */
const DIRECTORY_NAME = 0xa4;
/** TBSCertificate's [0] version and [3] extensions. */
const TBS_VERSION = 0xa0;
const TBS_EXTENSIONS = 0xa3;

interface CertificateFields {
  notBefore: Date;
  notAfter: Date;
  manufacturer: string;
}

/** The TPM manufacturer attribute in a Name (RDNSequence), or undefined. */
function manufacturerIn(name: Der): string | undefined {
  for (const rdn of derChildren(expectTag(name, DER_TAG.SEQUENCE, "Name"))) {
    for (const attribute of derChildren(expectTag(rdn, DER_TAG.SET, "RelativeDistinguishedName"))) {
      const [type, value] = derChildren(expectTag(attribute, DER_TAG.SEQUENCE, "AttributeTypeAndValue"));
      if (value && sameBytes(expectTag(type, DER_TAG.OID, "attribute type").contents, OID_TPM_MANUFACTURER)) {
        return derString(value);
      }
    }
  }
  return undefined;
}

/** Validity and the subjectAltName's TPM manufacturer, from the certificate's DER. */
function certificateFields(der: Uint8Array): CertificateFields {
  const { node: certificate, next } = readDer(der);
  if (next !== der.length) throw new TpmFormatError("DER: bytes after the certificate");
  const [tbs] = derChildren(expectTag(certificate, DER_TAG.SEQUENCE, "Certificate"));
  const fields = derChildren(expectTag(tbs, DER_TAG.SEQUENCE, "TBSCertificate"));
  // serialNumber, signature, issuer, validity follow the optional version.
  const first = fields[0]?.tag === TBS_VERSION ? 1 : 0;
  const validity = derChildren(expectTag(fields[first + 3], DER_TAG.SEQUENCE, "Validity"));
  if (validity.length !== 2) throw new TpmFormatError("DER: Validity is not two times");
  const notBefore = derTime(validity[0]!);
  const notAfter = derTime(validity[1]!);
  let manufacturer = "";
  const extensions = fields.find((field) => field.tag === TBS_EXTENSIONS);
  const [list] = extensions ? derChildren(extensions) : [];
  for (const extension of list ? derChildren(expectTag(list, DER_TAG.SEQUENCE, "Extensions")) : []) {
    const parts = derChildren(expectTag(extension, DER_TAG.SEQUENCE, "Extension"));
    if (!sameBytes(expectTag(parts[0], DER_TAG.OID, "extnID").contents, OID_SUBJECT_ALT_NAME)) continue;
    const value = expectTag(parts[parts.length - 1], DER_TAG.OCTET_STRING, "extnValue");
    const { node: names } = readDer(value.contents);
    for (const name of derChildren(expectTag(names, DER_TAG.SEQUENCE, "GeneralNames"))) {
      if (name.tag !== DIRECTORY_NAME) continue;
      const [inner] = derChildren(name);
      manufacturer = (inner && manufacturerIn(inner)) ?? manufacturer;
    }
  }
  return { notBefore, notAfter, manufacturer };
}

const iso = (date: Date) => date.toISOString();

/**
 * Whether `der` is an EK certificate issued by a CA in `store` and valid at `now`, with an RSA 2048 key
 * (the only EKs MakeCredential supports for now). tpm_unknown_ek_ca: no CA in the store issued it;
 * tpm_bad_ek_certificate: anything wrong with the certificate itself.
 */
export function verifyEkCertificate(
  der: Uint8Array,
  store: EkTrustStore,
  now: Date = new Date(),
): EkCertificateVerdict {
  let certificate: X509Certificate;
  let fields: CertificateFields;
  try {
    certificate = new X509Certificate(der);
    fields = certificateFields(der);
  } catch (error) {
    return bad(`the EK certificate does not parse: ${(error as Error).message}`);
  }
  if (now < fields.notBefore) return bad(`the EK certificate is not valid before ${iso(fields.notBefore)}`);
  if (now > fields.notAfter) return bad(`the EK certificate expired at ${iso(fields.notAfter)}`);
  if (certificate.ca) return bad("the EK certificate is a CA certificate");

  let publicKey: KeyObject;
  try {
    publicKey = certificate.publicKey;
  } catch (error) {
    return bad(`the EK certificate's public key is not supported: ${(error as Error).message}`);
  }
  const details = publicKey.asymmetricKeyDetails;
  if (publicKey.asymmetricKeyType !== "rsa" || details?.modulusLength !== 2048) {
    const what =
      publicKey.asymmetricKeyType === "ec"
        ? `an EC key (${details?.namedCurve})`
        : `a ${publicKey.asymmetricKeyType} key of ${details?.modulusLength} bits`;
    return bad(`only RSA 2048 EKs are supported; the EK certificate holds ${what}`);
  }

  // A matching name (and key identifier) is a claim; the signature decides.
  const issuers = store.issuersOf(certificate);
  if (issuers.length === 0) {
    return {
      ok: false,
      code: "tpm_unknown_ek_ca",
      message: `the EK certificate's issuer (${certificate.issuer}) is not among the EK CAs`,
    };
  }
  const signers = issuers.filter((issuer) => certificate.verify(issuer.certificate.publicKey));
  if (signers.length === 0) {
    return bad(`the EK certificate's signature does not verify under ${certificate.issuer}`);
  }
  if (!signers.some((signer) => now >= signer.notBefore && now <= signer.notAfter)) {
    return {
      ok: false,
      code: "tpm_unknown_ek_ca",
      message: `the EK certificate's issuer (${certificate.issuer}) is not valid at ${iso(now)}`,
    };
  }
  return { ok: true, publicKey, issuer: certificate.issuer, manufacturer: fields.manufacturer };
}
