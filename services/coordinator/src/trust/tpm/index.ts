export { TPM_ALG, TPM_ECC_NIST_P256, TPMA_OBJECT } from "./constants.js";
export {
  type EkCertificateVerdict,
  EkTrustStore,
  type TrustAnchor,
  verifyEkCertificate,
} from "./ek-certificate.js";
export { TpmFormatError } from "./errors.js";
export { makeCredential } from "./make-credential.js";
export { parseQuote, type QuoteInput, type QuoteVerdict, type TpmQuote, verifyQuote } from "./quote.js";
export {
  attestationKeyProblem,
  ecPublicPoint,
  parseTpmtPublic,
  type TpmPublic,
  tpmObjectName,
} from "./tpm-public.js";
