#include "templates.h"

#include <cstring>

namespace darkbloom::tpm {

namespace {

// PolicySecret(TPM_RH_ENDORSEMENT) with SHA-256: the authPolicy of every TCG default EK.
constexpr BYTE kEkPolicy[32] = {0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC,
                                0x8D, 0x46, 0xA5, 0xD7, 0x24, 0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52,
                                0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA};

constexpr TPMA_OBJECT kEkAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                      TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_ADMINWITHPOLICY |
                                      TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;

constexpr TPMA_OBJECT kAkAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                      TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                                      TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_SIGN_ENCRYPT;

}  // namespace

TPM2B_PUBLIC EkRsaTemplate() {
  TPM2B_PUBLIC out;
  std::memset(&out, 0, sizeof out);
  TPMT_PUBLIC& p = out.publicArea;
  p.type = TPM2_ALG_RSA;
  p.nameAlg = TPM2_ALG_SHA256;
  p.objectAttributes = kEkAttributes;
  p.authPolicy.size = sizeof kEkPolicy;
  std::memcpy(p.authPolicy.buffer, kEkPolicy, sizeof kEkPolicy);
  p.parameters.rsaDetail.symmetric.algorithm = TPM2_ALG_AES;
  p.parameters.rsaDetail.symmetric.keyBits.aes = 128;
  p.parameters.rsaDetail.symmetric.mode.aes = TPM2_ALG_CFB;
  p.parameters.rsaDetail.scheme.scheme = TPM2_ALG_NULL;
  p.parameters.rsaDetail.keyBits = 2048;
  p.parameters.rsaDetail.exponent = 0;
  // The profile fixes unique to 256 zero bytes: part of what makes the EK the certified one.
  p.unique.rsa.size = 256;
  return out;
}

TPM2B_PUBLIC AttestationKeyTemplate() {
  TPM2B_PUBLIC out;
  std::memset(&out, 0, sizeof out);
  TPMT_PUBLIC& p = out.publicArea;
  p.type = TPM2_ALG_ECC;
  p.nameAlg = TPM2_ALG_SHA256;
  p.objectAttributes = kAkAttributes;
  p.parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
  p.parameters.eccDetail.scheme.scheme = TPM2_ALG_ECDSA;
  p.parameters.eccDetail.scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
  p.parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
  p.parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
  return out;
}

bool IsAttestationKey(const TPMT_PUBLIC& a) {
  return a.type == TPM2_ALG_ECC && a.nameAlg == TPM2_ALG_SHA256 && a.objectAttributes == kAkAttributes &&
         a.authPolicy.size == 0 && a.parameters.eccDetail.symmetric.algorithm == TPM2_ALG_NULL &&
         a.parameters.eccDetail.scheme.scheme == TPM2_ALG_ECDSA &&
         a.parameters.eccDetail.scheme.details.ecdsa.hashAlg == TPM2_ALG_SHA256 &&
         a.parameters.eccDetail.curveID == TPM2_ECC_NIST_P256 &&
         a.parameters.eccDetail.kdf.scheme == TPM2_ALG_NULL;
}

bool IsStandardRsaEk(const TPMT_PUBLIC& a) {
  return a.type == TPM2_ALG_RSA && a.nameAlg == TPM2_ALG_SHA256 && a.objectAttributes == kEkAttributes &&
         a.authPolicy.size == sizeof kEkPolicy &&
         std::memcmp(a.authPolicy.buffer, kEkPolicy, sizeof kEkPolicy) == 0 &&
         a.parameters.rsaDetail.symmetric.algorithm == TPM2_ALG_AES &&
         a.parameters.rsaDetail.symmetric.keyBits.aes == 128 &&
         a.parameters.rsaDetail.symmetric.mode.aes == TPM2_ALG_CFB &&
         a.parameters.rsaDetail.scheme.scheme == TPM2_ALG_NULL && a.parameters.rsaDetail.keyBits == 2048 &&
         (a.parameters.rsaDetail.exponent == 0 || a.parameters.rsaDetail.exponent == 65537);
}

}  // namespace darkbloom::tpm
