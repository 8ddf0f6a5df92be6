// The public-area templates this addon creates keys from. Both are primaries in the endorsement
// hierarchy, so they are derived from the endorsement seed: the same template always yields the same
// key on the same TPM, which makes the persistent copy of the attestation key a cache rather than the
// only copy.
#pragma once

#include <tss2/tss2_tpm2_types.h>

namespace darkbloom::tpm {

// TCG EK Credential Profile 2.0, template L-1 (RSA 2048, AES-128-CFB, PolicySecret(endorsement)):
// the key the manufacturer's certificate in NV 0x01c00002 certifies.
TPM2B_PUBLIC EkRsaTemplate();

// The attestation key: an ECC NIST P-256 restricted signing key (ECDSA over SHA-256) that never
// leaves the TPM (fixedTPM, fixedParent, sensitiveDataOrigin). Restricted means the TPM refuses to
// sign a digest that it did not compute itself unless the data could not pass for a TPM-generated
// structure, so a quote signed by it cannot be forged by signing chosen bytes.
TPM2B_PUBLIC AttestationKeyTemplate();

// Whether a public area read back from the TPM is one this addon created from the template above
// (same type, attributes, scheme and curve); a key at the persistent handle that is not is someone
// else's and is never used or overwritten.
bool IsAttestationKey(const TPMT_PUBLIC& area);

// Whether a public area is the standard RSA EK (template L-1), so the persistent EK the platform
// provisioned (0x81010001) can be used instead of creating one, which takes seconds on real TPMs.
bool IsStandardRsaEk(const TPMT_PUBLIC& area);

}  // namespace darkbloom::tpm
