// darkbloom_mlx: the continuous-batching core over MLX, linked against an installed MLX.
// JS API (see src/mlx.ts): loadModel(config) → Promise<MlxModel>; MlxModel: info, isEog, logits,
// createScheduler(options, onStep) → Promise<MlxScheduler>, close; MlxScheduler: submit, cancel,
// stats, close — the llama addon's scheduler contract.
#include <napi.h>

#include <cmath>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "../common/errors.h"
#include "../common/scheduler_js.h"
#include "engine.h"
#include "js_options.h"

namespace dbmlx {
namespace {

const napi_type_tag kInternalTag = {0x6461726b626c6f6fULL, 0x6d6d6c7830303031ULL};

struct AddonData {
  Napi::FunctionReference modelClass;
  Napi::FunctionReference schedulerClass;
};

bool Tagged(Napi::Value v) { return v.IsExternal() && v.As<Napi::Object>().CheckTypeTag(&kInternalTag); }

std::string Device() {
  mx::Device d = mx::default_device();
  if (d.type == mx::Device::cpu) return "cpu";
#ifdef __APPLE__
  return "metal";
#else
  return "cuda";
#endif
}

std::string DtypeName(mx::Dtype t) {
  if (t == mx::float32) return "float32";
  if (t == mx::float16) return "float16";
  if (t == mx::bfloat16) return "bfloat16";
  return "other";
}

// Runs `work` on the engine thread, then settles a promise on the JS thread: done(env, result) resolves
// it; a thrown CodedError rejects it with its code, anything else with failCode; onFail runs (JS
// thread) before a rejection. done and onFail live on the JS side only (never destroyed on the engine
// thread, so they may hold what the engine thread must not release).
template <typename T>
Napi::Promise OnEngine(Napi::Env env, Engine& engine, std::function<T()> work,
                       std::function<Napi::Value(Napi::Env, T&)> done, const char* failCode,
                       std::function<void()> onFail = nullptr) {
  struct State {
    Napi::Promise::Deferred deferred;
    std::function<Napi::Value(Napi::Env, T&)> done;
    std::function<void()> onFail;
    std::optional<T> value;
    std::string code, message;
  };
  auto* state = new State{Napi::Promise::Deferred::New(env), std::move(done), std::move(onFail), std::nullopt, {}, {}};
  Napi::Promise promise = state->deferred.Promise();
  Napi::ThreadSafeFunction tsfn = Napi::ThreadSafeFunction::New(
      env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}), "darkbloom-mlx-call", 0, 1);
  try {
    engine.Post([work = std::move(work), tsfn, state, failCode]() mutable {
      try {
        state->value.emplace(work());
      } catch (const CodedError& e) {
        state->code = e.code;
        state->message = e.what();
      } catch (const std::exception& e) {
        state->code = failCode;
        state->message = e.what();
      } catch (...) {
        state->code = failCode;
        state->message = "unknown failure";
      }
      auto settle = [](Napi::Env env, Napi::Function, State* s) {
        std::unique_ptr<State> own(s);
        if (env == nullptr) return;
        if (!s->value) {
          if (s->onFail) s->onFail();
          s->deferred.Reject(JsError(env, s->code, s->message).Value());
          return;
        }
        try {
          s->deferred.Resolve(s->done(env, *s->value));
        } catch (const Napi::Error& e) {
          if (s->onFail) s->onFail();
          s->deferred.Reject(e.Value());
        }
      };
      tsfn.BlockingCall(state, settle);  // fails only at teardown: the state is left behind then
      tsfn.Release();
    });
  } catch (const CodedError& e) {
    tsfn.Release();
    std::unique_ptr<State> own(state);
    if (state->onFail) state->onFail();
    Throw(env, e.code, e.what());
  }
  return promise;
}

// What loadModel's engine job hands the MlxModel constructor.
struct ModelInit {
  std::shared_ptr<Engine> engine;
  ModelConfig config;
  int64_t bytes = 0;
  std::string dtype, device;
  int32_t bits = 0;
};

class MlxModel;

struct SchedulerInit {
  MlxModel* model = nullptr;
  std::shared_ptr<Scheduler> core;
};

class MlxModel : public Napi::ObjectWrap<MlxModel> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "MlxModel",
                       {
                           InstanceMethod<&MlxModel::Info>("info"),
                           InstanceMethod<&MlxModel::IsEog>("isEog"),
                           InstanceMethod<&MlxModel::Logits>("logits"),
                           InstanceMethod<&MlxModel::CreateScheduler>("createScheduler"),
                           InstanceMethod<&MlxModel::Close>("close"),
                       });
  }

  explicit MlxModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<MlxModel>(info) {
    if (!Tagged(info[0])) Throw(info.Env(), code::kBadInput, "models come from loadModel()");
    init_ = *info[0].As<Napi::External<ModelInit>>().Data();
    eos_.insert(init_.config.eosTokens.begin(), init_.config.eosTokens.end());
  }

  ~MlxModel() override {
    if (init_.engine) init_.engine->Stop();
  }

  void SchedulerClosed() { openSchedulers_--; }
  Engine& engine() { return *init_.engine; }
  int32_t nVocab() const { return init_.config.vocab; }

 private:
  Engine& Open(Napi::Env env) {
    if (!init_.engine) Throw(env, code::kClosed, "the model is closed");
    return *init_.engine;
  }

  int32_t Token(Napi::Env env, Napi::Value value) const {
    double d = Num(value);
    if (!(d >= 0 && d < init_.config.vocab && std::floor(d) == d))
      Throw(env, code::kBadInput, "token must be an integer from 0 to " + std::to_string(init_.config.vocab - 1));
    return static_cast<int32_t>(d);
  }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Open(env);
    const ModelConfig& c = init_.config;
    Napi::Object out = Napi::Object::New(env);
    out.Set("architecture", c.architecture);
    out.Set("nVocab", c.vocab);
    out.Set("nCtxTrain", c.maxPositionEmbeddings);
    out.Set("layers", c.layers);
    out.Set("sizeBytes", Napi::Number::New(env, static_cast<double>(init_.bytes)));
    out.Set("dtype", init_.dtype);
    out.Set("device", init_.device);
    out.Set("bits", init_.bits ? Napi::Number::New(env, init_.bits) : env.Null());
    return out;
  }

  Napi::Value IsEog(const Napi::CallbackInfo& info) {
    Open(info.Env());
    return Napi::Boolean::New(info.Env(), eos_.count(Token(info.Env(), info[0])) > 0);
  }

  // Diagnostic: the logits [n, vocab] of every position of a prompt, one forward pass from scratch
  // (no scheduler), in float32.
  Napi::Value Logits(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Engine& engine = Open(env);
    if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      Throw(env, code::kBadInput, "tokens must be an Int32Array");
    Napi::Int32Array t = info[0].As<Napi::Int32Array>();
    if (t.ElementLength() == 0 || t.ElementLength() > 8192) Throw(env, code::kBadInput, "tokens must hold 1 to 8192 tokens");
    std::vector<int32_t> tokens(t.Data(), t.Data() + t.ElementLength());
    for (int32_t tok : tokens) Token(env, Napi::Number::New(env, tok));
    Engine* e = &engine;
    return OnEngine<std::vector<float>>(
        env, engine,
        [e, tokens]() {
          const Transformer& m = *e->model();
          const ModelConfig& c = m.config();
          const int32_t n = static_cast<int32_t>(tokens.size());
          KvCache cache(c.layers, 1, c.kvHeads, c.headDim, n, 0, m.dtype());
          auto attend = [&](int32_t layer, const mx::array& q, const mx::array& k, const mx::array& v) {
            cache.Write(layer, 0, k, v);
            return cache.Attend(layer, q, n, std::nullopt, true, m.scale());
          };
          mx::array logits = m.Logits(m.Hidden(mx::array(tokens.data(), {1, n}, mx::int32), mx::array(0, mx::int32), attend));
          mx::eval(logits);
          const float* p = logits.data<float>();
          return std::vector<float>(p, p + static_cast<size_t>(n) * c.vocab);
        },
        [](Napi::Env env, std::vector<float>& v) -> Napi::Value {
          Napi::Float32Array out = Napi::Float32Array::New(env, v.size());
          std::copy(v.begin(), v.end(), out.Data());
          return out;
        },
        code::kEngineFailed);
  }

  Napi::Value CreateScheduler(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Engine& engine = Open(env);
    if (!info[0].IsObject()) Throw(env, code::kBadInput, "options must be an object");
    if (!info[1].IsFunction()) Throw(env, code::kBadInput, "onStep must be a function");
    SchedulerOptions options = ParseSchedulerOptions(env, info[0].As<Napi::Object>(), init_.config);

    openSchedulers_++;
    Engine* e = &engine;
    Napi::ObjectReference self = Napi::Persistent(Value());
    Napi::FunctionReference onStep = Napi::Persistent(info[1].As<Napi::Function>());
    auto refs = std::make_shared<std::pair<Napi::ObjectReference, Napi::FunctionReference>>(std::move(self),
                                                                                            std::move(onStep));
    return OnEngine<std::shared_ptr<Scheduler>>(
        env, engine, [e, options]() { return std::make_shared<Scheduler>(e, *e->model(), options); },
        [this, refs](Napi::Env env, std::shared_ptr<Scheduler>& core) -> Napi::Value {
          SchedulerInit init{this, core};
          Napi::External<SchedulerInit> ext = Napi::External<SchedulerInit>::New(env, &init);
          ext.TypeTag(&kInternalTag);
          return env.GetInstanceData<AddonData>()->schedulerClass.New({ext, refs->second.Value(), refs->first.Value()});
        },
        code::kEngineFailed, [this]() { openSchedulers_--; });
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (openSchedulers_ > 0) Throw(info.Env(), code::kBusy, "close the model's schedulers first");
    if (init_.engine) init_.engine->Stop();  // frees the weights on the engine thread, joins it
    init_.engine.reset();
    return info.Env().Undefined();
  }

  ModelInit init_;
  std::unordered_set<int32_t> eos_;
  int32_t openSchedulers_ = 0;  // including ones still being created; the model outlives them all
};

// The JS face of a Scheduler, which its model's engine thread steps. What the JS methods do is the
// llama scheduler's too (../common/scheduler_js.h: SchedulerJs).
class MlxScheduler : public Napi::ObjectWrap<MlxScheduler> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "MlxScheduler",
                       {
                           InstanceMethod<&MlxScheduler::Submit>("submit"),
                           InstanceMethod<&MlxScheduler::Cancel>("cancel"),
                           InstanceMethod<&MlxScheduler::Stats>("stats"),
                           InstanceMethod<&MlxScheduler::Close>("close"),
                       });
  }

  // (External<SchedulerInit>, onStep(events), model object)
  explicit MlxScheduler(const Napi::CallbackInfo& info) : Napi::ObjectWrap<MlxScheduler>(info) {
    Napi::Env env = info.Env();
    if (!Tagged(info[0]) || !info[1].IsFunction() || !info[2].IsObject())
      Throw(env, code::kBadInput, "schedulers come from model.createScheduler()");
    SchedulerInit* init = info[0].As<Napi::External<SchedulerInit>>().Data();
    model_ = init->model;
    core_ = init->core;
    modelRef_ = Napi::Persistent(info[2].As<Napi::Object>());
    js_.Start(env, info[1].As<Napi::Function>(), "darkbloom-mlx-scheduler", model_->nVocab(),
              core_->options().contextPerRow, [this](Napi::Env env) { Finalized(env); });
    auto emit = [this](std::vector<Event>&& events) { return js_.Emit(std::move(events)); };
    // The engine's last use of this wrapper: once finished_ is set (or the release lets Finalized run)
    // the wrapper may be gone, so the release goes through a copy of the handle.
    core_->Bind(emit, [this, tsfn = js_.tsfn()]() mutable {
      {
        std::lock_guard<std::mutex> lk(finishedMu_);
        finished_ = true;
        finishedCv_.notify_all();
      }
      tsfn.Release();
    });
    // The wrapper must outlive the engine's use of it: released in Finalized.
    Ref();
    model_->engine().Attach(core_);
  }

  ~MlxScheduler() override {
    // Normally Finalized ran already; this covers an environment torn down first.
    if (!js_.finalized() && core_) {
      core_->RequestClose();
      js_.tsfn().Abort();
      std::unique_lock<std::mutex> lk(finishedMu_);
      finishedCv_.wait(lk, [&] { return finished_; });
    }
  }

 private:
  Napi::Value Submit(const Napi::CallbackInfo& info) { return js_.Submit(info, *core_); }
  Napi::Value Cancel(const Napi::CallbackInfo& info) { return js_.Cancel(info, *core_); }
  Napi::Value Close(const Napi::CallbackInfo& info) { return js_.Close(info, *core_); }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    SchedulerStats s = core_->CurrentStats();
    return StatsToJs(info.Env(), s, s.kvBytes);
  }

  void Finalized(Napi::Env env) {
    model_->SchedulerClosed();
    modelRef_.Reset();
    js_.Finalized(env);
    Unref();
  }

  MlxModel* model_ = nullptr;
  Napi::ObjectReference modelRef_;  // keeps the model (and its engine) alive while this scheduler runs
  std::shared_ptr<Scheduler> core_;
  SchedulerJs js_;
  std::mutex finishedMu_;
  std::condition_variable finishedCv_;
  bool finished_ = false;
};

Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ModelConfig config = ParseConfig(env, info[0]);
  auto engine = std::make_shared<Engine>();
  Engine* e = engine.get();
  return OnEngine<ModelInit>(
      env, *engine,
      [e, config]() {
        ModelInit init;
        // On the CPU, float32 throughout (and the same numerics at every batch size); on a GPU, the
        // checkpoint's own float type.
        const bool cpu = mx::default_device().type == mx::Device::cpu;
        std::unique_ptr<Transformer> model;
        try {
          model = std::make_unique<Transformer>(config, cpu ? std::optional<mx::Dtype>(mx::float32) : std::nullopt);
        } catch (const std::exception& err) {
          throw CodedError(code::kModelLoadFailed, std::string("cannot load the checkpoint: ") + err.what());
        }
        init.config = model->config();
        init.bytes = model->bytes();
        init.dtype = DtypeName(model->dtype());
        init.bits = model->bits();
        init.device = Device();
        e->SetModel(std::move(model));
        return init;
      },
      [engine](Napi::Env env, ModelInit& init) -> Napi::Value {
        init.engine = engine;
        Napi::External<ModelInit> ext = Napi::External<ModelInit>::New(env, &init);
        ext.TypeTag(&kInternalTag);
        return env.GetInstanceData<AddonData>()->modelClass.New({ext});
      },
      code::kModelLoadFailed);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  data->modelClass = Napi::Persistent(MlxModel::Define(env));
  data->schedulerClass = Napi::Persistent(MlxScheduler::Define(env));
  env.SetInstanceData(data);
  exports.Set("loadModel", Napi::Function::New<LoadModel>(env, "loadModel"));
  exports.Set("device", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                return Napi::String::New(info.Env(), Device());
              }));
  return exports;
}

}  // namespace
}  // namespace dbmlx

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return dbmlx::Init(env, exports); }

NODE_API_MODULE(darkbloom_mlx, InitAddon)
