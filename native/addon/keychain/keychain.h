// Thin wrappers over the Security framework calls the keychain addon makes (macOS only). Each one
// makes one call and reports its status as the framework gave it; every decision (look up first,
// create only on item-not-found, which failure means what) lives in native/src/keychain.ts, where it
// runs on Linux in CI against a strict fake of these same calls.
#ifndef DARKBLOOM_KEYCHAIN_H_
#define DARKBLOOM_KEYCHAIN_H_

#include <CoreFoundation/CoreFoundation.h>
#include <Security/Security.h>

#include <cstdint>
#include <string>
#include <vector>

namespace darkbloom {

// Owns one CoreFoundation reference (a +1 from a Create or Copy call, or an explicit Retain) and
// releases it exactly once. Move-only, so ownership is visible at every hand-over.
template <typename T>
class CFRef {
 public:
  CFRef() = default;
  explicit CFRef(T ref) : ref_(ref) {}
  CFRef(const CFRef&) = delete;
  CFRef& operator=(const CFRef&) = delete;
  CFRef(CFRef&& other) noexcept : ref_(other.Release()) {}
  CFRef& operator=(CFRef&& other) noexcept {
    if (this != &other) Reset(other.Release());
    return *this;
  }
  ~CFRef() { Reset(); }

  // Takes a +1 on a reference obtained under the Get rule.
  static CFRef Retain(T ref) {
    if (ref != nullptr) CFRetain(ref);
    return CFRef(ref);
  }

  T get() const { return ref_; }
  explicit operator bool() const { return ref_ != nullptr; }
  // Gives up ownership without releasing: the caller now owns the +1.
  T Release() {
    T ref = ref_;
    ref_ = nullptr;
    return ref;
  }
  void Reset(T ref = nullptr) {
    if (ref_ != nullptr) CFRelease(ref_);
    ref_ = ref;
  }

 private:
  T ref_ = nullptr;
};

// What one Security call reported. `status` is its OSStatus, or, for the calls that report a
// CFError, that error's code; `domain` is then the CFError's domain ("NSOSStatusErrorDomain" when the
// code is an OSStatus, "CryptoTokenKit" for some of the enclave token's failures) and stays empty
// for calls that return a bare OSStatus.
struct Outcome {
  int32_t status = errSecSuccess;
  std::string domain;
  std::string message;

  bool ok() const { return status == errSecSuccess; }
};

// Which persistent enclave keys a query or delete is about: the private keys with this label in
// this access group.
struct KeyQuery {
  std::string access_group;
  std::string label;
  // Passed through as kSecUseDataProtectionKeychain. Without it, SecItem calls go to the file-based
  // keychain, which ignores access groups; the TypeScript layer always sets it, and the fake it is
  // tested against refuses a call without it.
  bool use_data_protection_keychain = true;
};

struct CreateOptions {
  // kSecAttrIsPermanent: stored in the keychain, or a key that lives only as long as its SecKeyRef.
  bool permanent = false;
  // Both empty for a non-permanent key.
  std::string access_group;
  std::string label;
  bool use_data_protection_keychain = true;
};

struct FoundKey {
  CFRef<SecKeyRef> key;
  // kSecAttrCreationDate in milliseconds since the Unix epoch (0 when the item has none).
  double created_at_ms = 0;
  // kSecAttrApplicationLabel: for an asymmetric key, the hash of its public key.
  std::vector<uint8_t> application_label;
};

// SecItemCopyMatching, all matches (kSecMatchLimitAll) with their references and attributes: the
// keychain does not make a label unique (a key item's primary key is its class, type, application
// label, application tag, size and access group), so two daemons racing to create a key can both
// succeed, and the caller chooses among what is there.
Outcome CopyKeys(const KeyQuery& query, std::vector<FoundKey>* keys);

// SecKeyCreateRandomKey: a P-256 key generated inside the Secure Enclave, usable only for signing
// (kSecAccessControlPrivateKeyUsage), only on this device and only after the first unlock since boot.
Outcome CreateKey(const CreateOptions& options, CFRef<SecKeyRef>* key);

// SecItemDelete of every key the query matches.
Outcome DeleteKeys(const KeyQuery& query);

// SecKeyCopyPublicKey + SecKeyCopyExternalRepresentation: the SEC1 uncompressed point (65 bytes).
Outcome CopyPublicKey(SecKeyRef key, std::vector<uint8_t>* point);

// SecKeyCreateSignature with kSecKeyAlgorithmECDSASignatureMessageX962SHA256: SHA-256 of `data`,
// signed inside the enclave, DER encoded.
Outcome Sign(SecKeyRef key, const std::vector<uint8_t>& data, std::vector<uint8_t>* signature);

}  // namespace darkbloom

#endif  // DARKBLOOM_KEYCHAIN_H_
