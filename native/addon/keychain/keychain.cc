// The Security framework calls behind the keychain addon (see keychain.h). Ownership follows Core
// Foundation's rules: whatever a Create or Copy call returns, and every CFError it hands back, is
// adopted by a CFRef at once, so each early return releases what was made before it.
#include "keychain.h"

#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace darkbloom {
namespace {

Outcome Failure(int32_t status, std::string message) {
  Outcome outcome;
  outcome.status = status;
  outcome.message = std::move(message);
  return outcome;
}

std::string ToString(CFStringRef string) {
  if (string == nullptr) return {};
  const CFIndex length = CFStringGetLength(string);
  const CFIndex capacity = CFStringGetMaximumSizeForEncoding(length, kCFStringEncodingUTF8) + 1;
  std::string out(static_cast<size_t>(capacity), '\0');
  if (!CFStringGetCString(string, out.data(), capacity, kCFStringEncodingUTF8)) return {};
  out.resize(std::strlen(out.c_str()));
  return out;
}

CFRef<CFStringRef> MakeString(const std::string& value) {
  return CFRef<CFStringRef>(CFStringCreateWithBytes(kCFAllocatorDefault,
                                                    reinterpret_cast<const UInt8*>(value.data()),
                                                    static_cast<CFIndex>(value.size()),
                                                    kCFStringEncodingUTF8, false));
}

CFRef<CFMutableDictionaryRef> MakeDictionary() {
  return CFRef<CFMutableDictionaryRef>(CFDictionaryCreateMutable(
      kCFAllocatorDefault, 0, &kCFTypeDictionaryKeyCallBacks, &kCFTypeDictionaryValueCallBacks));
}

std::vector<uint8_t> ToBytes(CFDataRef data) {
  const UInt8* bytes = CFDataGetBytePtr(data);
  const CFIndex length = CFDataGetLength(data);
  if (bytes == nullptr || length <= 0) return {};
  return std::vector<uint8_t>(bytes, bytes + length);
}

// A bare OSStatus, with the framework's own text for it (SecCopyErrorMessageString: Copy rule).
Outcome FromStatus(OSStatus status, const char* call) {
  Outcome outcome;
  outcome.status = status;
  if (status != errSecSuccess) {
    CFRef<CFStringRef> text(SecCopyErrorMessageString(status, nullptr));
    outcome.message = std::string(call) + ": " +
                      (text ? ToString(text.get()) : "OSStatus " + std::to_string(status));
  }
  return outcome;
}

// A CFError out-parameter is returned +1: this adopts and releases it. Its domain is kept so that
// the TypeScript side can tell an OSStatus from a CryptoTokenKit code with the same number.
Outcome FromCFError(CFErrorRef error, const char* call) {
  if (error == nullptr) return Failure(errSecInternalComponent, std::string(call) + " failed without an error");
  CFRef<CFErrorRef> owned(error);
  Outcome outcome;
  const CFIndex code = CFErrorGetCode(error);
  // A failure reported with code 0 must not read as success.
  outcome.status = code == 0 ? errSecInternalComponent : static_cast<int32_t>(code);
  outcome.domain = ToString(CFErrorGetDomain(error));  // Get rule: not released here
  CFRef<CFStringRef> description(CFErrorCopyDescription(error));
  outcome.message = std::string(call) + ": " + ToString(description.get());
  return outcome;
}

// The attributes every query and delete carries: enclave P-256 private keys with this label in this
// access group, in the data-protection keychain (on macOS the access group only applies there).
void AddKeyScope(CFMutableDictionaryRef dictionary, CFStringRef access_group, CFStringRef label,
                 bool use_data_protection_keychain) {
  CFDictionarySetValue(dictionary, kSecClass, kSecClassKey);
  CFDictionarySetValue(dictionary, kSecAttrKeyClass, kSecAttrKeyClassPrivate);
  CFDictionarySetValue(dictionary, kSecAttrKeyType, kSecAttrKeyTypeECSECPrimeRandom);
  CFDictionarySetValue(dictionary, kSecAttrTokenID, kSecAttrTokenIDSecureEnclave);
  CFDictionarySetValue(dictionary, kSecAttrAccessGroup, access_group);
  CFDictionarySetValue(dictionary, kSecAttrLabel, label);
  CFDictionarySetValue(dictionary, kSecUseDataProtectionKeychain,
                       use_data_protection_keychain ? kCFBooleanTrue : kCFBooleanFalse);
}

struct Scope {
  CFRef<CFStringRef> access_group;
  CFRef<CFStringRef> label;
  CFRef<CFMutableDictionaryRef> dictionary;
};

// Builds the scoped dictionary for a query; false when Core Foundation could not allocate.
bool MakeScope(const KeyQuery& query, Scope* scope) {
  scope->access_group = MakeString(query.access_group);
  scope->label = MakeString(query.label);
  scope->dictionary = MakeDictionary();
  if (!scope->access_group || !scope->label || !scope->dictionary) return false;
  AddKeyScope(scope->dictionary.get(), scope->access_group.get(), scope->label.get(),
              query.use_data_protection_keychain);
  return true;
}

}  // namespace

Outcome CopyKeys(const KeyQuery& query, std::vector<FoundKey>* keys) {
  keys->clear();
  Scope scope;
  if (!MakeScope(query, &scope)) return Failure(errSecAllocate, "SecItemCopyMatching: out of memory");
  CFDictionarySetValue(scope.dictionary.get(), kSecReturnRef, kCFBooleanTrue);
  CFDictionarySetValue(scope.dictionary.get(), kSecReturnAttributes, kCFBooleanTrue);
  CFDictionarySetValue(scope.dictionary.get(), kSecMatchLimit, kSecMatchLimitAll);

  CFTypeRef result = nullptr;
  const OSStatus status = SecItemCopyMatching(scope.dictionary.get(), &result);
  CFRef<CFTypeRef> owned(result);
  if (status != errSecSuccess) return FromStatus(status, "SecItemCopyMatching");
  // Asking for a reference and attributes with kSecMatchLimitAll yields an array of dictionaries.
  if (result == nullptr || CFGetTypeID(result) != CFArrayGetTypeID()) {
    return Failure(errSecInternalComponent, "SecItemCopyMatching: the result is not an array");
  }
  const CFArrayRef items = static_cast<CFArrayRef>(result);
  const CFIndex count = CFArrayGetCount(items);
  for (CFIndex i = 0; i < count; ++i) {
    const void* item = CFArrayGetValueAtIndex(items, i);
    if (item == nullptr || CFGetTypeID(item) != CFDictionaryGetTypeID()) continue;
    const CFDictionaryRef attributes = static_cast<CFDictionaryRef>(item);
    const void* ref = CFDictionaryGetValue(attributes, kSecValueRef);
    if (ref == nullptr || CFGetTypeID(ref) != SecKeyGetTypeID()) continue;

    FoundKey found;
    // Get rule: the array owns the key; the retained copy outlives `owned`.
    found.key = CFRef<SecKeyRef>::Retain(static_cast<SecKeyRef>(const_cast<void*>(ref)));
    const void* created = CFDictionaryGetValue(attributes, kSecAttrCreationDate);
    if (created != nullptr && CFGetTypeID(created) == CFDateGetTypeID()) {
      found.created_at_ms =
          (CFDateGetAbsoluteTime(static_cast<CFDateRef>(created)) + kCFAbsoluteTimeIntervalSince1970) *
          1000.0;
    }
    const void* application_label = CFDictionaryGetValue(attributes, kSecAttrApplicationLabel);
    if (application_label != nullptr && CFGetTypeID(application_label) == CFDataGetTypeID()) {
      found.application_label = ToBytes(static_cast<CFDataRef>(application_label));
    }
    keys->push_back(std::move(found));
  }
  return Outcome{};
}

Outcome CreateKey(const CreateOptions& options, CFRef<SecKeyRef>* key) {
  key->Reset();
  CFErrorRef error = nullptr;
  CFRef<SecAccessControlRef> access(SecAccessControlCreateWithFlags(
      kCFAllocatorDefault, kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly,
      kSecAccessControlPrivateKeyUsage, &error));
  if (!access) return FromCFError(error, "SecAccessControlCreateWithFlags");

  const int bits = 256;
  CFRef<CFNumberRef> size(CFNumberCreate(kCFAllocatorDefault, kCFNumberIntType, &bits));
  CFRef<CFMutableDictionaryRef> private_attributes = MakeDictionary();
  CFRef<CFMutableDictionaryRef> attributes = MakeDictionary();
  if (!size || !private_attributes || !attributes) {
    return Failure(errSecAllocate, "SecKeyCreateRandomKey: out of memory");
  }
  CFDictionarySetValue(private_attributes.get(), kSecAttrIsPermanent,
                       options.permanent ? kCFBooleanTrue : kCFBooleanFalse);
  CFDictionarySetValue(private_attributes.get(), kSecAttrAccessControl, access.get());

  // The label and access group are set on the private key's attributes and at the top level:
  // SecKeyCreateRandomKey merges the top level into the private key's attributes, and Apple's
  // samples use either place.
  CFRef<CFStringRef> access_group;
  if (!options.access_group.empty()) {
    access_group = MakeString(options.access_group);
    if (!access_group) return Failure(errSecAllocate, "SecKeyCreateRandomKey: out of memory");
    CFDictionarySetValue(private_attributes.get(), kSecAttrAccessGroup, access_group.get());
    CFDictionarySetValue(attributes.get(), kSecAttrAccessGroup, access_group.get());
  }
  CFRef<CFStringRef> label;
  if (!options.label.empty()) {
    label = MakeString(options.label);
    if (!label) return Failure(errSecAllocate, "SecKeyCreateRandomKey: out of memory");
    CFDictionarySetValue(private_attributes.get(), kSecAttrLabel, label.get());
    CFDictionarySetValue(attributes.get(), kSecAttrLabel, label.get());
  }

  CFDictionarySetValue(attributes.get(), kSecAttrKeyType, kSecAttrKeyTypeECSECPrimeRandom);
  CFDictionarySetValue(attributes.get(), kSecAttrKeySizeInBits, size.get());
  CFDictionarySetValue(attributes.get(), kSecAttrTokenID, kSecAttrTokenIDSecureEnclave);
  CFDictionarySetValue(attributes.get(), kSecPrivateKeyAttrs, private_attributes.get());
  CFDictionarySetValue(attributes.get(), kSecUseDataProtectionKeychain,
                       options.use_data_protection_keychain ? kCFBooleanTrue : kCFBooleanFalse);

  SecKeyRef created = SecKeyCreateRandomKey(attributes.get(), &error);
  if (created == nullptr) return FromCFError(error, "SecKeyCreateRandomKey");
  key->Reset(created);
  return Outcome{};
}

Outcome DeleteKeys(const KeyQuery& query) {
  Scope scope;
  if (!MakeScope(query, &scope)) return Failure(errSecAllocate, "SecItemDelete: out of memory");
  return FromStatus(SecItemDelete(scope.dictionary.get()), "SecItemDelete");
}

Outcome CopyPublicKey(SecKeyRef key, std::vector<uint8_t>* point) {
  point->clear();
  CFRef<SecKeyRef> public_key(SecKeyCopyPublicKey(key));
  if (!public_key) return Failure(errSecInvalidKeyRef, "SecKeyCopyPublicKey: the key has no public key");
  CFErrorRef error = nullptr;
  CFRef<CFDataRef> data(SecKeyCopyExternalRepresentation(public_key.get(), &error));
  if (!data) return FromCFError(error, "SecKeyCopyExternalRepresentation");
  *point = ToBytes(data.get());
  return Outcome{};
}

Outcome Sign(SecKeyRef key, const std::vector<uint8_t>& data, std::vector<uint8_t>* signature) {
  signature->clear();
  CFRef<CFDataRef> input(CFDataCreate(kCFAllocatorDefault, data.empty() ? nullptr : data.data(),
                                      static_cast<CFIndex>(data.size())));
  if (!input) return Failure(errSecAllocate, "SecKeyCreateSignature: out of memory");
  CFErrorRef error = nullptr;
  CFRef<CFDataRef> signed_data(
      SecKeyCreateSignature(key, kSecKeyAlgorithmECDSASignatureMessageX962SHA256, input.get(), &error));
  if (!signed_data) return FromCFError(error, "SecKeyCreateSignature");
  *signature = ToBytes(signed_data.get());
  return Outcome{};
}

}  // namespace darkbloom
