// The JavaScript face of device.h: a TpmDevice class whose methods return Promises and run on the
// libuv thread pool (a TPM command takes milliseconds to seconds; none may block the event loop).
// Calls on one TpmDevice are serialized: a TPM without a resource manager serves one connection at
// a time, and the key's persistent handle is created at most once.
#include <napi.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <mutex>

#include "device.h"

namespace {

using darkbloom::tpm::Bytes;
using darkbloom::tpm::Device;
using darkbloom::tpm::EcdsaSignature;
using darkbloom::tpm::TpmError;

struct Shared {
  Shared(std::string tcti, uint32_t handle) : device(std::move(tcti), handle) {}
  Device device;
  std::mutex mutex;
};

Napi::Buffer<uint8_t> ToBuffer(Napi::Env env, const Bytes& bytes) {
  return Napi::Buffer<uint8_t>::Copy(env, bytes.data(), bytes.size());
}

Bytes FromBuffer(const Napi::Value& value, const char* name) {
  if (!value.IsBuffer()) throw Napi::TypeError::New(value.Env(), std::string(name) + " must be a Buffer");
  auto buffer = value.As<Napi::Buffer<uint8_t>>();
  return Bytes(buffer.Data(), buffer.Data() + buffer.Length());
}

Napi::Object SignatureObject(Napi::Env env, const EcdsaSignature& s) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("r", ToBuffer(env, s.r));
  out.Set("s", ToBuffer(env, s.s));
  return out;
}

// Runs `work` on the thread pool under the device's lock; `done` turns its result into JavaScript.
// A TpmError rejects with an Error carrying `code` and `rc`.
template <typename Result>
class Worker : public Napi::AsyncWorker {
 public:
  Worker(Napi::Env env, std::shared_ptr<Shared> shared, std::function<Result(Device&)> work,
         std::function<Napi::Value(Napi::Env, const Result&)> done)
      : Napi::AsyncWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        shared_(std::move(shared)),
        work_(std::move(work)),
        done_(std::move(done)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    std::lock_guard<std::mutex> lock(shared_->mutex);
    try {
      result_ = work_(shared_->device);
    } catch (const TpmError& e) {
      code_ = e.code;
      rc_ = e.rc;
      SetError(e.what());
    } catch (const std::exception& e) {
      code_ = "tpm_error";
      SetError(e.what());
    }
  }
  void OnOK() override { deferred_.Resolve(done_(Env(), result_)); }
  void OnError(const Napi::Error& error) override {
    Napi::Object e = error.Value();
    e.Set("code", Napi::String::New(Env(), code_));
    e.Set("rc", Napi::Number::New(Env(), rc_));
    deferred_.Reject(e);
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<Shared> shared_;
  std::function<Result(Device&)> work_;
  std::function<Napi::Value(Napi::Env, const Result&)> done_;
  Result result_{};
  std::string code_;
  uint32_t rc_ = 0;
};

class TpmDevice : public Napi::ObjectWrap<TpmDevice> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "TpmDevice",
                       {InstanceMethod<&TpmDevice::Probe>("probe"),
                        InstanceMethod<&TpmDevice::ReadNv>("readNv"),
                        InstanceMethod<&TpmDevice::LoadOrCreateAttestationKey>("loadOrCreateAttestationKey"),
                        InstanceMethod<&TpmDevice::Sign>("sign"),
                        InstanceMethod<&TpmDevice::ActivateCredential>("activateCredential"),
                        InstanceMethod<&TpmDevice::Quote>("quote")});
  }

  // new TpmDevice(tcti: string, attestationKeyHandle: number)
  explicit TpmDevice(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TpmDevice>(info) {
    if (!info[0].IsString() || !info[1].IsNumber()) {
      throw Napi::TypeError::New(info.Env(), "TpmDevice(tcti: string, attestationKeyHandle: number)");
    }
    const uint32_t handle = info[1].As<Napi::Number>().Uint32Value();
    if (handle < 0x81000000u || handle > 0x81FFFFFFu) {
      throw Napi::RangeError::New(info.Env(), "the attestation key handle must be a persistent handle");
    }
    shared_ = std::make_shared<Shared>(info[0].As<Napi::String>().Utf8Value(), handle);
  }

 private:
  template <typename Result>
  Napi::Value Run(Napi::Env env, std::function<Result(Device&)> work,
                  std::function<Napi::Value(Napi::Env, const Result&)> done) {
    auto* worker = new Worker<Result>(env, shared_, std::move(work), std::move(done));
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
  }

  Napi::Value Probe(const Napi::CallbackInfo& info) {
    return Run<bool>(
        info.Env(),
        [](Device& d) {
          d.Probe();
          return true;
        },
        [](Napi::Env env, const bool&) { return env.Undefined(); });
  }

  // readNv(index): Buffer | null
  Napi::Value ReadNv(const Napi::CallbackInfo& info) {
    if (!info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "readNv(index: number)");
    const uint32_t index = info[0].As<Napi::Number>().Uint32Value();
    return Run<std::optional<Bytes>>(
        info.Env(), [index](Device& d) { return d.ReadNv(index); },
        [](Napi::Env env, const std::optional<Bytes>& r) -> Napi::Value {
          return r ? Napi::Value(ToBuffer(env, *r)) : env.Null();
        });
  }

  // loadOrCreateAttestationKey(): { public: Buffer (TPMT_PUBLIC), point: Buffer (SEC1, 65 bytes),
  // created, persistent }
  Napi::Value LoadOrCreateAttestationKey(const Napi::CallbackInfo& info) {
    return Run<darkbloom::tpm::AttestationKey>(
        info.Env(), [](Device& d) { return d.LoadOrCreateAttestationKey(); },
        [](Napi::Env env, const darkbloom::tpm::AttestationKey& k) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("public", ToBuffer(env, k.tpmtPublic));
          out.Set("created", Napi::Boolean::New(env, k.created));
          out.Set("persistent", Napi::Boolean::New(env, k.persistent));
          Napi::Buffer<uint8_t> point = Napi::Buffer<uint8_t>::New(env, 65);
          point[0] = 0x04;
          std::copy(k.x.begin(), k.x.end(), point.Data() + 1);
          std::copy(k.y.begin(), k.y.end(), point.Data() + 33);
          out.Set("point", point);
          return out;
        });
  }

  // sign(data): { r, s }
  Napi::Value Sign(const Napi::CallbackInfo& info) {
    Bytes data = FromBuffer(info[0], "data");
    return Run<EcdsaSignature>(
        info.Env(), [data = std::move(data)](Device& d) { return d.Sign(data); },
        [](Napi::Env env, const EcdsaSignature& s) -> Napi::Value { return SignatureObject(env, s); });
  }

  // activateCredential(credentialBlob, encryptedSecret): Buffer
  Napi::Value ActivateCredential(const Napi::CallbackInfo& info) {
    Bytes blob = FromBuffer(info[0], "credentialBlob");
    Bytes secret = FromBuffer(info[1], "encryptedSecret");
    return Run<Bytes>(
        info.Env(),
        [blob = std::move(blob), secret = std::move(secret)](Device& d) {
          return d.ActivateCredential(blob, secret);
        },
        [](Napi::Env env, const Bytes& b) -> Napi::Value { return ToBuffer(env, b); });
  }

  // quote(qualifyingData, pcrs: number[]): { attest, signature: { r, s }, pcrValues: Buffer[] }
  Napi::Value Quote(const Napi::CallbackInfo& info) {
    Bytes extra = FromBuffer(info[0], "qualifyingData");
    if (!info[1].IsArray()) throw Napi::TypeError::New(info.Env(), "pcrs must be an array of numbers");
    Napi::Array list = info[1].As<Napi::Array>();
    std::vector<uint32_t> pcrs;
    for (uint32_t i = 0; i < list.Length(); ++i) {
      Napi::Value v = list.Get(i);
      if (!v.IsNumber()) throw Napi::TypeError::New(info.Env(), "pcrs must be an array of numbers");
      pcrs.push_back(v.As<Napi::Number>().Uint32Value());
    }
    return Run<darkbloom::tpm::QuoteResult>(
        info.Env(), [extra = std::move(extra), pcrs = std::move(pcrs)](Device& d) { return d.Quote(extra, pcrs); },
        [](Napi::Env env, const darkbloom::tpm::QuoteResult& q) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("attest", ToBuffer(env, q.attest));
          out.Set("signature", SignatureObject(env, q.signature));
          Napi::Array values = Napi::Array::New(env, q.pcrValues.size());
          for (size_t i = 0; i < q.pcrValues.size(); ++i) values.Set(i, ToBuffer(env, q.pcrValues[i]));
          out.Set("pcrValues", values);
          return out;
        });
  }

  std::shared_ptr<Shared> shared_;
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("TpmDevice", TpmDevice::Define(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(darkbloom_tpm, Init)
