#include "device.h"

#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>

#include "templates.h"

namespace darkbloom::tpm {

namespace {

// The EK the platform provisions at this handle (TCG EK Credential Profile).
constexpr TPM2_HANDLE kProvisionedRsaEk = 0x81010001;
// Largest chunk for NV_Read and SequenceUpdate that every TPM accepts (TPM2_MAX_NV_BUFFER_SIZE and
// MAX_DIGEST_BUFFER are at least 512 and 1024 on real parts; the TPM reports its own, 512 is safe).
constexpr size_t kChunk = 512;

// The TPM's own error number with the handle/parameter/session index bits masked out, or 0 for an
// error of a TSS layer (ESYS, marshalling, TCTI).
TSS2_RC TpmRc(TSS2_RC rc) {
  if ((rc & TSS2_RC_LAYER_MASK) != TSS2_TPM_RC_LAYER) return 0;
  return (rc & TPM2_RC_FMT1) ? (rc & (TPM2_RC_FMT1 | 0x3F)) : rc;
}

[[noreturn]] void Fail(const char* what, TSS2_RC rc, const char* code = "tpm_error") {
  throw TpmError(code, rc, std::string(what) + ": " + Tss2_RC_Decode(rc));
}

void Check(TSS2_RC rc, const char* what) {
  if (rc != TSS2_RC_SUCCESS) Fail(what, rc);
}

template <typename T>
struct EsysFree {
  void operator()(T* p) const { Esys_Free(p); }
};
template <typename T>
using Owned = std::unique_ptr<T, EsysFree<T>>;

Bytes Marshal(const TPMT_PUBLIC& area) {
  Bytes out(sizeof(TPMT_PUBLIC));
  size_t offset = 0;
  Check(Tss2_MU_TPMT_PUBLIC_Marshal(&area, out.data(), out.size(), &offset), "marshal TPMT_PUBLIC");
  out.resize(offset);
  return out;
}

Bytes EccParameter(const TPM2B_ECC_PARAMETER& p) { return Bytes(p.buffer, p.buffer + p.size); }

// A P-256 coordinate as exactly 32 bytes (the TPM may drop leading zeros).
Bytes Coordinate(const TPM2B_ECC_PARAMETER& p) {
  if (p.size > 32) Fail("read the attestation key's point", TSS2_ESYS_RC_MALFORMED_RESPONSE);
  Bytes out(32 - p.size, 0);
  out.insert(out.end(), p.buffer, p.buffer + p.size);
  return out;
}

AttestationKey KeyInfo(const TPMT_PUBLIC& area, bool created, bool persistent) {
  return {Marshal(area), created, persistent, Coordinate(area.unique.ecc.x), Coordinate(area.unique.ecc.y)};
}

EcdsaSignature FromSignature(const TPMT_SIGNATURE& sig) {
  if (sig.sigAlg != TPM2_ALG_ECDSA) Fail("signature", TSS2_ESYS_RC_BAD_VALUE);
  return {EccParameter(sig.signature.ecdsa.signatureR), EccParameter(sig.signature.ecdsa.signatureS)};
}

TPML_PCR_SELECTION Sha256Selection(const std::vector<uint32_t>& pcrs) {
  TPML_PCR_SELECTION sel;
  std::memset(&sel, 0, sizeof sel);
  sel.count = 1;
  sel.pcrSelections[0].hash = TPM2_ALG_SHA256;
  sel.pcrSelections[0].sizeofSelect = 3;
  for (uint32_t pcr : pcrs) {
    if (pcr >= 24) throw TpmError("tpm_bad_input", 0, "PCR index out of range: " + std::to_string(pcr));
    sel.pcrSelections[0].pcrSelect[pcr / 8] |= static_cast<BYTE>(1u << (pcr % 8));
  }
  return sel;
}

constexpr TPMT_SIG_SCHEME kEcdsaSha256 = {TPM2_ALG_ECDSA, {.ecdsa = {TPM2_ALG_SHA256}}};

}  // namespace

// One connection to the TPM for the length of one operation. Transient objects and sessions it
// loads are flushed when it ends, whatever happened: without a resource manager they would
// otherwise fill the TPM's few slots.
class Device::Session {
 public:
  explicit Session(const std::string& tcti) {
    TSS2_RC rc = Tss2_TctiLdr_Initialize(tcti.empty() ? nullptr : tcti.c_str(), &tcti_);
    if (rc != TSS2_RC_SUCCESS) Fail(("open the TPM (" + tcti + ")").c_str(), rc, "tpm_unavailable");
    rc = Esys_Initialize(&ctx_, tcti_, nullptr);
    if (rc != TSS2_RC_SUCCESS) {
      Tss2_TctiLdr_Finalize(&tcti_);
      Fail("initialize the ESAPI", rc, "tpm_unavailable");
    }
  }
  ~Session() {
    for (auto it = transients_.rbegin(); it != transients_.rend(); ++it) Esys_FlushContext(ctx_, *it);
    Esys_Finalize(&ctx_);
    Tss2_TctiLdr_Finalize(&tcti_);
  }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  ESYS_CONTEXT* ctx() const { return ctx_; }

  // Remembers a transient object or session to flush at the end.
  ESYS_TR Transient(ESYS_TR handle) {
    transients_.push_back(handle);
    return handle;
  }
  // Flushes one now (a sequence completed by the TPM is gone already: forget it without flushing).
  void Forget(ESYS_TR handle) {
    transients_.erase(std::remove(transients_.begin(), transients_.end(), handle), transients_.end());
  }

  // The persistent object at `handle`, or nullopt when the handle is empty.
  std::optional<ESYS_TR> Persistent(TPM2_HANDLE handle) {
    ESYS_TR object = ESYS_TR_NONE;
    TSS2_RC rc = Esys_TR_FromTPMPublic(ctx_, handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &object);
    if (rc == TSS2_RC_SUCCESS) return object;
    if (TpmRc(rc) == TPM2_RC_HANDLE) return std::nullopt;
    Fail("look up a persistent handle", rc);
  }

  TPMT_PUBLIC ReadPublic(ESYS_TR object) {
    TPM2B_PUBLIC* out = nullptr;
    Check(Esys_ReadPublic(ctx_, object, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &out, nullptr, nullptr),
          "read a public area");
    Owned<TPM2B_PUBLIC> owned(out);
    return out->publicArea;
  }

  // A primary key of the endorsement hierarchy (empty endorsement authorization, the default).
  ESYS_TR CreateEndorsementPrimary(const TPM2B_PUBLIC& templ, TPMT_PUBLIC* area) {
    TPM2B_SENSITIVE_CREATE sensitive;
    std::memset(&sensitive, 0, sizeof sensitive);
    TPM2B_DATA outside{};
    TPML_PCR_SELECTION none{};
    ESYS_TR object = ESYS_TR_NONE;
    TPM2B_PUBLIC* out = nullptr;
    Check(Esys_CreatePrimary(ctx_, ESYS_TR_RH_ENDORSEMENT, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                             &sensitive, &templ, &outside, &none, &object, &out, nullptr, nullptr, nullptr),
          "create a primary key in the endorsement hierarchy");
    Owned<TPM2B_PUBLIC> owned(out);
    if (area) *area = out->publicArea;
    return Transient(object);
  }

 private:
  TSS2_TCTI_CONTEXT* tcti_ = nullptr;
  ESYS_CONTEXT* ctx_ = nullptr;
  std::vector<ESYS_TR> transients_;
};

Device::Device(std::string tcti, TPM2_HANDLE akHandle) : tcti_(std::move(tcti)), akHandle_(akHandle) {}

void Device::Probe() {
  Session session(tcti_);
  TPMS_CAPABILITY_DATA* caps = nullptr;
  Check(Esys_GetCapability(session.ctx(), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_TPM_PROPERTIES,
                           TPM2_PT_MANUFACTURER, 1, nullptr, &caps),
        "read the TPM's properties");
  Esys_Free(caps);
}

std::optional<Bytes> Device::ReadNv(TPM2_HANDLE index) {
  Session session(tcti_);
  ESYS_TR nv = ESYS_TR_NONE;
  TSS2_RC rc = Esys_TR_FromTPMPublic(session.ctx(), index, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &nv);
  if (TpmRc(rc) == TPM2_RC_HANDLE) return std::nullopt;
  Check(rc, "look up an NV index");
  TPM2B_NV_PUBLIC* pub = nullptr;
  Check(Esys_NV_ReadPublic(session.ctx(), nv, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub, nullptr),
        "read an NV index's public area");
  const uint16_t size = pub->nvPublic.dataSize;
  Esys_Free(pub);
  Bytes out;
  out.reserve(size);
  while (out.size() < size) {
    const auto n = static_cast<uint16_t>(std::min<size_t>(kChunk, size - out.size()));
    TPM2B_MAX_NV_BUFFER* data = nullptr;
    // EK certificate indices are readable with their own (empty) authorization.
    Check(Esys_NV_Read(session.ctx(), nv, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, n,
                       static_cast<uint16_t>(out.size()), &data),
          "read an NV index");
    out.insert(out.end(), data->buffer, data->buffer + data->size);
    const bool shortRead = data->size == 0;
    Esys_Free(data);
    if (shortRead) Fail("read an NV index", TSS2_ESYS_RC_MALFORMED_RESPONSE);
  }
  return out;
}

namespace {

struct LoadedKey {
  ESYS_TR object;
  AttestationKey info;
};

// The attestation key in this session: the persistent one when it is there, else derived (and made
// persistent when the owner authorization allows; it is empty by default).
LoadedKey LoadAttestationKey(Device::Session& session, TPM2_HANDLE akHandle) {
  if (auto existing = session.Persistent(akHandle)) {
    TPMT_PUBLIC area = session.ReadPublic(*existing);
    if (!IsAttestationKey(area)) {
      char hex[16];
      std::snprintf(hex, sizeof hex, "0x%08x", akHandle);
      throw TpmError("tpm_handle_in_use", 0,
                     std::string("persistent handle ") + hex +
                         " holds a key that is not a Darkbloom attestation key; choose another handle");
    }
    return {*existing, KeyInfo(area, false, true)};
  }
  TPMT_PUBLIC area;
  ESYS_TR transient = session.CreateEndorsementPrimary(AttestationKeyTemplate(), &area);
  ESYS_TR persistent = ESYS_TR_NONE;
  TSS2_RC rc = Esys_EvictControl(session.ctx(), ESYS_TR_RH_OWNER, transient, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                 ESYS_TR_NONE, akHandle, &persistent);
  if (rc == TSS2_RC_SUCCESS) return {persistent, KeyInfo(area, true, true)};
  // An owner password, or no room for persistent objects: the transient key is the same key.
  return {transient, KeyInfo(area, true, false)};
}

}  // namespace

AttestationKey Device::LoadOrCreateAttestationKey() {
  Session session(tcti_);
  return LoadAttestationKey(session, akHandle_).info;
}

EcdsaSignature Device::Sign(const Bytes& data) {
  Session session(tcti_);
  const ESYS_TR key = LoadAttestationKey(session, akHandle_).object;
  TPM2B_AUTH noAuth{};
  ESYS_TR sequence = ESYS_TR_NONE;
  Check(Esys_HashSequenceStart(session.ctx(), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &noAuth,
                               TPM2_ALG_SHA256, &sequence),
        "start a hash sequence");
  session.Transient(sequence);
  size_t offset = 0;
  // Everything but the last chunk goes through SequenceUpdate; SequenceComplete takes the last.
  while (data.size() - offset > kChunk) {
    TPM2B_MAX_BUFFER chunk{};
    chunk.size = kChunk;
    std::memcpy(chunk.buffer, data.data() + offset, kChunk);
    Check(Esys_SequenceUpdate(session.ctx(), sequence, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &chunk),
          "hash the data");
    offset += kChunk;
  }
  TPM2B_MAX_BUFFER last{};
  last.size = static_cast<uint16_t>(data.size() - offset);
  std::memcpy(last.buffer, data.data() + offset, last.size);
  TPM2B_DIGEST* digest = nullptr;
  TPMT_TK_HASHCHECK* ticket = nullptr;
  Check(Esys_SequenceComplete(session.ctx(), sequence, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &last,
                              ESYS_TR_RH_ENDORSEMENT, &digest, &ticket),
        "complete the hash");
  session.Forget(sequence);
  Owned<TPM2B_DIGEST> ownedDigest(digest);
  Owned<TPMT_TK_HASHCHECK> ownedTicket(ticket);
  // A null ticket means the data began with TPM_GENERATED_VALUE (or was too short to tell): the TPM
  // refuses to let a restricted key sign what could pass for one of its own attestation structures.
  if (ticket->hierarchy == TPM2_RH_NULL) {
    throw TpmError("tpm_bad_input", 0,
                   "the TPM refuses to sign data shorter than 4 bytes or that starts like a TPM attestation");
  }
  TPMT_SIGNATURE* signature = nullptr;
  Check(Esys_Sign(session.ctx(), key, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, digest, &kEcdsaSha256,
                  ticket, &signature),
        "sign with the attestation key");
  Owned<TPMT_SIGNATURE> owned(signature);
  return FromSignature(*signature);
}

Bytes Device::ActivateCredential(const Bytes& idObject, const Bytes& encryptedSecret) {
  TPM2B_ID_OBJECT credential{};
  TPM2B_ENCRYPTED_SECRET secret{};
  size_t offset = 0;
  if (Tss2_MU_TPM2B_ID_OBJECT_Unmarshal(idObject.data(), idObject.size(), &offset, &credential) !=
          TSS2_RC_SUCCESS ||
      offset != idObject.size()) {
    throw TpmError("tpm_bad_input", 0, "the credential blob is not a TPM2B_ID_OBJECT");
  }
  offset = 0;
  if (Tss2_MU_TPM2B_ENCRYPTED_SECRET_Unmarshal(encryptedSecret.data(), encryptedSecret.size(), &offset,
                                                &secret) != TSS2_RC_SUCCESS ||
      offset != encryptedSecret.size()) {
    throw TpmError("tpm_bad_input", 0, "the encrypted secret is not a TPM2B_ENCRYPTED_SECRET");
  }

  Session session(tcti_);
  const ESYS_TR key = LoadAttestationKey(session, akHandle_).object;
  ESYS_TR ek = ESYS_TR_NONE;
  if (auto provisioned = session.Persistent(kProvisionedRsaEk);
      provisioned && IsStandardRsaEk(session.ReadPublic(*provisioned))) {
    ek = *provisioned;
  } else {
    ek = session.CreateEndorsementPrimary(EkRsaTemplate(), nullptr);
  }

  // The EK authorizes with PolicySecret(endorsement) only (adminWithPolicy, no userWithAuth).
  TPMT_SYM_DEF noSymmetric{};
  noSymmetric.algorithm = TPM2_ALG_NULL;
  ESYS_TR policy = ESYS_TR_NONE;
  Check(Esys_StartAuthSession(session.ctx(), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                              ESYS_TR_NONE, nullptr, TPM2_SE_POLICY, &noSymmetric, TPM2_ALG_SHA256, &policy),
        "start a policy session");
  session.Transient(policy);
  TPM2B_NONCE noNonce{};
  TPM2B_DIGEST noCpHash{};
  Check(Esys_PolicySecret(session.ctx(), ESYS_TR_RH_ENDORSEMENT, policy, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                          ESYS_TR_NONE, &noNonce, &noCpHash, &noNonce, 0, nullptr, nullptr),
        "satisfy the EK's policy");
  TPM2B_DIGEST* certInfo = nullptr;
  TSS2_RC rc = Esys_ActivateCredential(session.ctx(), key, ek, ESYS_TR_PASSWORD, policy, ESYS_TR_NONE,
                                       &credential, &secret, &certInfo);
  // The policy session ends with the command either way (continueSession is not set for it here).
  session.Forget(policy);
  Esys_FlushContext(session.ctx(), policy);
  if (rc != TSS2_RC_SUCCESS) Fail("activate the credential", rc, "tpm_activation_failed");
  Owned<TPM2B_DIGEST> owned(certInfo);
  return Bytes(certInfo->buffer, certInfo->buffer + certInfo->size);
}

QuoteResult Device::Quote(const Bytes& qualifyingData, const std::vector<uint32_t>& pcrs) {
  if (qualifyingData.size() > sizeof(TPMU_HA)) {
    throw TpmError("tpm_bad_input", 0, "qualifying data longer than a digest");
  }
  if (pcrs.empty() || pcrs.size() > 8) {
    throw TpmError("tpm_bad_input", 0, "quote between 1 and 8 PCRs");
  }
  const TPML_PCR_SELECTION selection = Sha256Selection(pcrs);
  std::vector<uint32_t> sorted(pcrs);
  std::sort(sorted.begin(), sorted.end());

  Session session(tcti_);
  const ESYS_TR key = LoadAttestationKey(session, akHandle_).object;
  TPM2B_DATA extra{};
  extra.size = static_cast<uint16_t>(qualifyingData.size());
  std::memcpy(extra.buffer, qualifyingData.data(), qualifyingData.size());

  auto read = [&](std::vector<Bytes>* values) {
    UINT32 counter = 0;
    TPML_PCR_SELECTION* out = nullptr;
    TPML_DIGEST* digests = nullptr;
    Check(Esys_PCR_Read(session.ctx(), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &selection, &counter, &out,
                        &digests),
          "read the PCRs");
    Owned<TPML_PCR_SELECTION> ownedOut(out);
    Owned<TPML_DIGEST> ownedDigests(digests);
    if (values) {
      // PCR_Read returns at most 8 digests, in ascending PCR order; a bank the TPM does not have
      // comes back empty.
      if (digests->count != sorted.size()) {
        throw TpmError("tpm_error", 0, "the TPM has no SHA-256 PCR bank with these PCRs allocated");
      }
      values->clear();
      for (UINT32 i = 0; i < digests->count; ++i) {
        values->emplace_back(digests->digests[i].buffer, digests->digests[i].buffer + digests->digests[i].size);
      }
    }
    return counter;
  };

  // The quote's digest covers the PCRs at the moment of quoting; values read on both sides of it
  // with the same update counter are those values. A PCR extended in between is read again.
  for (int attempt = 0; attempt < 5; ++attempt) {
    QuoteResult result;
    const UINT32 before = read(&result.pcrValues);
    TPM2B_ATTEST* attest = nullptr;
    TPMT_SIGNATURE* signature = nullptr;
    Check(Esys_Quote(session.ctx(), key, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &extra, &kEcdsaSha256,
                     &selection, &attest, &signature),
          "quote the PCRs");
    Owned<TPM2B_ATTEST> ownedAttest(attest);
    Owned<TPMT_SIGNATURE> ownedSignature(signature);
    if (read(nullptr) != before) continue;
    result.attest.assign(attest->attestationData, attest->attestationData + attest->size);
    result.signature = FromSignature(*signature);
    return result;
  }
  throw TpmError("tpm_error", 0, "the PCRs kept changing while they were quoted");
}

}  // namespace darkbloom::tpm
