// Node-API bindings of the keychain primitives (keychain.h), one function per Security call. Every
// call that may touch the keychain or the Secure Enclave runs in an AsyncWorker, on libuv's thread
// pool: securityd round trips and enclave operations take milliseconds to seconds, and a locked or
// busy keychain must not stall the daemon's event loop. Each function returns a Promise of
// `{ status, domain?, message?, ...result }`: a failed Security call is a result, not a rejection,
// so that native/src/keychain.ts decides what each status means. Promises reject only for a
// programming error (bad arguments are thrown synchronously as TypeErrors) or an allocation failure.
//
// Key handles are externals owning one retain of a SecKeyRef, released by their finalizer when the
// handle is garbage collected, and type-tagged so that no other external passes for one.
#include <napi.h>

#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "keychain.h"

namespace darkbloom {
namespace {

using SecKey = std::remove_pointer_t<SecKeyRef>;

// Static storage on purpose: since Node 20.12 an external keeps a pointer to its tag, not a copy.
constexpr napi_type_tag kKeyHandleTag = {0x6461726b626c6f6fULL, 0x6d2e7365636b6579ULL};

Napi::Value WrapKey(Napi::Env env, CFRef<SecKeyRef>* key) {
  Napi::External<SecKey> handle =
      Napi::External<SecKey>::New(env, key->get(), [](Napi::Env, SecKey* ref) { CFRelease(ref); });
  // Only once the external exists does its finalizer own the retain; if New threw, `key` still does.
  key->Release();
  handle.TypeTag(&kKeyHandleTag);
  return handle;
}

SecKeyRef UnwrapKey(const Napi::Value& value) {
  if (!value.IsExternal() || !value.As<Napi::External<SecKey>>().CheckTypeTag(&kKeyHandleTag)) {
    throw Napi::TypeError::New(value.Env(), "expected a key handle from this addon");
  }
  return value.As<Napi::External<SecKey>>().Data();
}

Napi::Object ToObject(Napi::Env env, const Outcome& outcome) {
  Napi::Object result = Napi::Object::New(env);
  result.Set("status", Napi::Number::New(env, outcome.status));
  if (!outcome.domain.empty()) result.Set("domain", Napi::String::New(env, outcome.domain));
  if (!outcome.message.empty()) result.Set("message", Napi::String::New(env, outcome.message));
  return result;
}

Napi::Uint8Array ToBytes(Napi::Env env, const std::vector<uint8_t>& bytes) {
  Napi::Uint8Array array = Napi::Uint8Array::New(env, bytes.size());
  if (!bytes.empty()) std::memcpy(array.Data(), bytes.data(), bytes.size());
  return array;
}

Napi::Object OptionsArgument(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsObject()) {
    throw Napi::TypeError::New(info.Env(), "expected an options object");
  }
  return info[0].As<Napi::Object>();
}

std::string StringOption(const Napi::Object& options, const char* name, bool required) {
  Napi::Value value = options.Get(name);
  if (!required && value.IsUndefined()) return {};
  if (!value.IsString() || value.As<Napi::String>().Utf8Value().empty()) {
    throw Napi::TypeError::New(options.Env(), std::string(name) + " must be a non-empty string");
  }
  return value.As<Napi::String>().Utf8Value();
}

// No default: the caller states the keychain on every call (see KeyQuery).
bool BooleanOption(const Napi::Object& options, const char* name) {
  Napi::Value value = options.Get(name);
  if (!value.IsBoolean()) throw Napi::TypeError::New(options.Env(), std::string(name) + " must be a boolean");
  return value.As<Napi::Boolean>().Value();
}

KeyQuery QueryArgument(const Napi::CallbackInfo& info) {
  Napi::Object options = OptionsArgument(info);
  KeyQuery query;
  query.access_group = StringOption(options, "accessGroup", true);
  query.label = StringOption(options, "label", true);
  query.use_data_protection_keychain = BooleanOption(options, "useDataProtectionKeychain");
  return query;
}

// Runs one primitive off the main thread and settles a Promise with its outcome. Execute() must not
// touch JavaScript; Result() runs back on the main thread, in a handle scope.
class PrimitiveWorker : public Napi::AsyncWorker {
 public:
  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  PrimitiveWorker(Napi::Env env, const char* name)
      : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)) {}

  virtual Napi::Object Result(Napi::Env env) = 0;

  void OnOK() override { deferred_.Resolve(Result(Env())); }
  void OnError(const Napi::Error& error) override { deferred_.Reject(error.Value()); }

  Outcome outcome_;

 private:
  Napi::Promise::Deferred deferred_;
};

class CopyKeysWorker : public PrimitiveWorker {
 public:
  CopyKeysWorker(Napi::Env env, KeyQuery query)
      : PrimitiveWorker(env, "darkbloom.keychain.copyKeys"), query_(std::move(query)) {}

 protected:
  void Execute() override { outcome_ = CopyKeys(query_, &keys_); }

  Napi::Object Result(Napi::Env env) override {
    Napi::Object result = ToObject(env, outcome_);
    if (!outcome_.ok()) return result;
    Napi::Array keys = Napi::Array::New(env, keys_.size());
    for (size_t i = 0; i < keys_.size(); ++i) {
      Napi::Object found = Napi::Object::New(env);
      found.Set("key", WrapKey(env, &keys_[i].key));
      found.Set("createdAtMs", Napi::Number::New(env, keys_[i].created_at_ms));
      found.Set("applicationLabel", ToBytes(env, keys_[i].application_label));
      keys.Set(static_cast<uint32_t>(i), found);
    }
    result.Set("keys", keys);
    return result;
  }

 private:
  KeyQuery query_;
  std::vector<FoundKey> keys_;  // released by their CFRefs unless handed to JavaScript
};

class CreateKeyWorker : public PrimitiveWorker {
 public:
  CreateKeyWorker(Napi::Env env, CreateOptions options)
      : PrimitiveWorker(env, "darkbloom.keychain.createKey"), options_(std::move(options)) {}

 protected:
  void Execute() override { outcome_ = CreateKey(options_, &key_); }

  Napi::Object Result(Napi::Env env) override {
    Napi::Object result = ToObject(env, outcome_);
    if (outcome_.ok() && key_) result.Set("key", WrapKey(env, &key_));
    return result;
  }

 private:
  CreateOptions options_;
  CFRef<SecKeyRef> key_;
};

class DeleteKeysWorker : public PrimitiveWorker {
 public:
  DeleteKeysWorker(Napi::Env env, KeyQuery query)
      : PrimitiveWorker(env, "darkbloom.keychain.deleteKeys"), query_(std::move(query)) {}

 protected:
  void Execute() override { outcome_ = DeleteKeys(query_); }
  Napi::Object Result(Napi::Env env) override { return ToObject(env, outcome_); }

 private:
  KeyQuery query_;
};

// The worker holds its own retain of the key, so a handle collected while the call runs on the
// thread pool cannot free the SecKeyRef under it.
class PublicKeyWorker : public PrimitiveWorker {
 public:
  PublicKeyWorker(Napi::Env env, SecKeyRef key)
      : PrimitiveWorker(env, "darkbloom.keychain.publicKey"), key_(CFRef<SecKeyRef>::Retain(key)) {}

 protected:
  void Execute() override { outcome_ = CopyPublicKey(key_.get(), &point_); }

  Napi::Object Result(Napi::Env env) override {
    Napi::Object result = ToObject(env, outcome_);
    if (outcome_.ok()) result.Set("publicKey", ToBytes(env, point_));
    return result;
  }

 private:
  CFRef<SecKeyRef> key_;
  std::vector<uint8_t> point_;
};

class SignWorker : public PrimitiveWorker {
 public:
  // The data is copied on the main thread: the caller's buffer may change or be collected while the
  // signature is computed.
  SignWorker(Napi::Env env, SecKeyRef key, std::vector<uint8_t> data)
      : PrimitiveWorker(env, "darkbloom.keychain.sign"),
        key_(CFRef<SecKeyRef>::Retain(key)),
        data_(std::move(data)) {}

 protected:
  void Execute() override { outcome_ = Sign(key_.get(), data_, &signature_); }

  Napi::Object Result(Napi::Env env) override {
    Napi::Object result = ToObject(env, outcome_);
    if (outcome_.ok()) result.Set("signature", ToBytes(env, signature_));
    return result;
  }

 private:
  CFRef<SecKeyRef> key_;
  std::vector<uint8_t> data_;
  std::vector<uint8_t> signature_;
};

template <typename Worker, typename... Args>
Napi::Value StartWorker(Napi::Env env, Args&&... args) {
  // AsyncWorker deletes itself once it has settled (its default Destroy()).
  Worker* worker = new Worker(env, std::forward<Args>(args)...);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// copyKeys({ accessGroup, label, useDataProtectionKeychain }) →
//   Promise<{ status, domain?, message?, keys?: [{ key, createdAtMs, applicationLabel }] }>
Napi::Value CopyKeysFunction(const Napi::CallbackInfo& info) {
  return StartWorker<CopyKeysWorker>(info.Env(), QueryArgument(info));
}

// createKey({ permanent, accessGroup?, label?, useDataProtectionKeychain }) →
//   Promise<{ status, domain?, message?, key? }>
Napi::Value CreateKeyFunction(const Napi::CallbackInfo& info) {
  Napi::Object options = OptionsArgument(info);
  CreateOptions create;
  create.permanent = BooleanOption(options, "permanent");
  create.access_group = StringOption(options, "accessGroup", false);
  create.label = StringOption(options, "label", false);
  create.use_data_protection_keychain = BooleanOption(options, "useDataProtectionKeychain");
  if (create.permanent && (create.access_group.empty() || create.label.empty())) {
    // Without them a permanent key would land in the process's default access group, unlabelled.
    throw Napi::TypeError::New(info.Env(), "a permanent key needs an accessGroup and a label");
  }
  return StartWorker<CreateKeyWorker>(info.Env(), std::move(create));
}

// deleteKeys({ accessGroup, label, useDataProtectionKeychain }) → Promise<{ status, domain?, message? }>
Napi::Value DeleteKeysFunction(const Napi::CallbackInfo& info) {
  return StartWorker<DeleteKeysWorker>(info.Env(), QueryArgument(info));
}

// publicKey(key) → Promise<{ status, domain?, message?, publicKey? }>
Napi::Value PublicKeyFunction(const Napi::CallbackInfo& info) {
  if (info.Length() < 1) throw Napi::TypeError::New(info.Env(), "expected a key handle");
  return StartWorker<PublicKeyWorker>(info.Env(), UnwrapKey(info[0]));
}

// sign(key, data: Uint8Array) → Promise<{ status, domain?, message?, signature? }>
Napi::Value SignFunction(const Napi::CallbackInfo& info) {
  if (info.Length() < 2 || !info[1].IsTypedArray() ||
      info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(info.Env(), "expected a key handle and a Uint8Array");
  }
  SecKeyRef key = UnwrapKey(info[0]);
  Napi::Uint8Array data = info[1].As<Napi::Uint8Array>();
  std::vector<uint8_t> bytes(data.Data(), data.Data() + data.ElementLength());
  return StartWorker<SignWorker>(info.Env(), key, std::move(bytes));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("copyKeys", Napi::Function::New(env, CopyKeysFunction, "copyKeys"));
  exports.Set("createKey", Napi::Function::New(env, CreateKeyFunction, "createKey"));
  exports.Set("deleteKeys", Napi::Function::New(env, DeleteKeysFunction, "deleteKeys"));
  exports.Set("publicKey", Napi::Function::New(env, PublicKeyFunction, "publicKey"));
  exports.Set("sign", Napi::Function::New(env, SignFunction, "sign"));
  return exports;
}

}  // namespace
}  // namespace darkbloom

// NODE_API_MODULE pastes its argument into an identifier: it takes an unqualified name.
static Napi::Object InitKeychainAddon(Napi::Env env, Napi::Object exports) {
  return darkbloom::Init(env, exports);
}

NODE_API_MODULE(darkbloom_keychain, InitKeychainAddon)
