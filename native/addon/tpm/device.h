// Synchronous TPM operations over the ESAPI (tss2-esys). Every public method opens its own
// connection (TCTI) and closes it before returning: a daemon that held the TPM open would lock out
// every other user of a TPM without a resource manager (a raw /dev/tpm0, a swtpm socket), and with
// the kernel's resource manager (/dev/tpmrm0) transient objects die with the connection anyway. What
// persists between calls is the attestation key at its persistent handle; when it cannot be made
// persistent (an owner password is set) it is re-derived per call, which gives the same key because
// it is a primary key of the endorsement seed.
#pragma once

#include <tss2/tss2_esys.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace darkbloom::tpm {

using Bytes = std::vector<uint8_t>;

// A failed TPM or TSS call: `code` is stable for JavaScript ("tpm_unavailable": the TCTI could not
// be opened; "tpm_handle_in_use": the persistent handle holds a key this addon did not make;
// "tpm_bad_input": malformed bytes from the caller; "tpm_error": anything else), `rc` the TSS2_RC.
class TpmError : public std::runtime_error {
 public:
  TpmError(std::string code, TSS2_RC rc, const std::string& message)
      : std::runtime_error(message), code(std::move(code)), rc(rc) {}
  std::string code;
  TSS2_RC rc;
};

struct AttestationKey {
  Bytes tpmtPublic;  // the marshalled TPMT_PUBLIC (no size prefix)
  bool created;      // derived by this call (it was not at the persistent handle)
  bool persistent;   // it is at the persistent handle now
  Bytes x, y;        // the public point, each coordinate 32 bytes
};

struct EcdsaSignature {
  Bytes r;
  Bytes s;
};

struct QuoteResult {
  Bytes attest;  // the marshalled TPMS_ATTEST the signature covers
  EcdsaSignature signature;
  std::vector<Bytes> pcrValues;  // SHA-256 values of the quoted PCRs, in ascending order
};

class Device {
 public:
  // tcti: a tctildr configuration ("device:/dev/tpmrm0", "swtpm:host=…,port=…"); akHandle: where
  // the attestation key is kept (0x81000000-0x81FFFFFF).
  Device(std::string tcti, TPM2_HANDLE akHandle);

  // Opens and closes a connection: throws tpm_unavailable when there is no usable TPM.
  void Probe();
  // The contents of an NV index (an EK certificate), or nullopt when the index is not defined.
  std::optional<Bytes> ReadNv(TPM2_HANDLE index);
  AttestationKey LoadOrCreateAttestationKey();
  // ECDSA-SHA256 over data by the attestation key (through a TPM hash sequence, whose ticket is what
  // lets a restricted key sign).
  EcdsaSignature Sign(const Bytes& data);
  // TPM2_ActivateCredential with the attestation key and the EK (the provisioned one at 0x81010001
  // when it is the standard RSA EK, else derived from template L-1): returns the secret.
  Bytes ActivateCredential(const Bytes& idObject, const Bytes& encryptedSecret);
  // TPM2_Quote by the attestation key over the SHA-256 bank's `pcrs`, with their values read in the
  // same PCR generation as the quote (retried when a PCR changed in between).
  QuoteResult Quote(const Bytes& qualifyingData, const std::vector<uint32_t>& pcrs);

 // One TPM connection for one operation (device.cc).
  class Session;

 private:
  std::string tcti_;
  TPM2_HANDLE akHandle_;
};

}  // namespace darkbloom::tpm
