// Scheduler: the JS face of an Engine. Submissions go in under the engine's lock; each step's events
// come back through a ThreadSafeFunction with a small bounded queue and a blocking call, so a JS
// consumer that falls behind stalls the engine thread instead of piling up memory.
#include <cmath>
#include <string>

#include "common.h"
#include "model.h"

namespace dbllama {
namespace {

// Steps the engine may run ahead of JS.
constexpr size_t kMaxQueuedSteps = 64;

std::string Id(Napi::Env env, Napi::Value value) {
  if (!value.IsString()) Throw(env, code::kBadInput, "id must be a string");
  std::string id = value.As<Napi::String>().Utf8Value();
  if (id.empty() || id.size() > 1024) Throw(env, code::kBadInput, "id must be 1 to 1024 bytes");
  return id;
}

}  // namespace

Napi::Function Scheduler::Define(Napi::Env env) {
  return DefineClass(env, "LlamaScheduler",
                     {
                         InstanceMethod<&Scheduler::Submit>("submit"),
                         InstanceMethod<&Scheduler::Cancel>("cancel"),
                         InstanceMethod<&Scheduler::Stats>("stats"),
                         InstanceMethod<&Scheduler::Close>("close"),
                     });
}

Scheduler::Scheduler(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Scheduler>(info) {
  Napi::Env env = info.Env();
  if (!info[0].IsExternal() || !info[0].As<Napi::Object>().CheckTypeTag(&kInternalTag) || !info[1].IsFunction() ||
      !info[2].IsObject())
    Throw(env, code::kBadInput, "schedulers come from model.createScheduler()");
  SchedulerInit* init = info[0].As<Napi::External<SchedulerInit>>().Data();
  model_ = init->model;
  modelRef_ = Napi::Persistent(info[2].As<Napi::Object>());
  contextPerRow_ = init->options.contextPerRow;
  nVocab_ = llama_vocab_n_tokens(llama_model_get_vocab(model_->model()));
  tsfn_ = Napi::ThreadSafeFunction::New(env, info[1].As<Napi::Function>(), "darkbloom-llama-scheduler",
                                        kMaxQueuedSteps, 1, this,
                                        [](Napi::Env env, Scheduler* self) { self->Finalized(env); });
  // Idle, the scheduler does not keep the process alive; a submission or close() holds it (HoldLoop).
  tsfn_.Unref(env);
  auto emit = [this](std::vector<Event>&& events) {
    auto* data = new std::vector<Event>(std::move(events));
    napi_status status = tsfn_.BlockingCall(
        data, [this](Napi::Env env, Napi::Function onStep, std::vector<Event>* d) { Deliver(env, onStep, d); });
    if (status != napi_ok) delete data;
    return status == napi_ok;
  };
  engine_ = std::make_unique<Engine>(model_->model(), init->ctx, init->options, emit);
  init->ctx = nullptr;  // the engine owns it: nothing above may throw after this
  // The wrapper must outlive its thread: released in Finalized, after the join.
  Ref();
  thread_ = std::thread([this] {
    engine_->Run();
    tsfn_.Release();
  });
}

Scheduler::~Scheduler() {
  // Normally Finalized joined the thread already; this covers an environment torn down first.
  if (thread_.joinable()) {
    engine_->RequestClose();
    tsfn_.Abort();
    thread_.join();
  }
}

void Scheduler::HoldLoop(Napi::Env env, bool hold) {
  if (finalized_ || hold == holding_) return;
  if (hold)
    tsfn_.Ref(env);
  else
    tsfn_.Unref(env);
  holding_ = hold;
}

void Scheduler::Settled(Napi::Env env) {
  if (--outstanding_ <= 0 && !closing_) HoldLoop(env, false);
}

Napi::Value Scheduler::Submit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (closing_ || finalized_) Throw(env, code::kClosed, "the scheduler is closed");
  Submission s;
  s.id = Id(env, info[0]);
  if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    Throw(env, code::kBadInput, "prompt must be an Int32Array");
  Napi::Int32Array prompt = info[1].As<Napi::Int32Array>();
  if (prompt.ElementLength() == 0) Throw(env, code::kBadInput, "prompt must hold at least one token");
  for (size_t i = 0; i < prompt.ElementLength(); i++)
    if (prompt[i] < 0 || prompt[i] >= nVocab_)
      Throw(env, code::kBadInput, "prompt token " + std::to_string(prompt[i]) + " is not in the vocabulary");
  double maxTokens = info[2].IsNumber() ? info[2].As<Napi::Number>().DoubleValue() : NAN;
  if (!(maxTokens >= 1 && maxTokens <= (1 << 24) && std::floor(maxTokens) == maxTokens))
    Throw(env, code::kBadInput, "maxTokens must be a positive integer");
  // The gate comes before anything runs: a row never runs out of cells mid-generation.
  if (static_cast<double>(prompt.ElementLength()) + maxTokens > contextPerRow_)
    Throw(env, code::kContextLengthExceeded,
          "the prompt (" + std::to_string(prompt.ElementLength()) + " tokens) plus maxTokens (" +
              std::to_string(static_cast<int64_t>(maxTokens)) + ") exceeds the context per row (" +
              std::to_string(contextPerRow_) + ")");
  s.prompt.assign(prompt.Data(), prompt.Data() + prompt.ElementLength());
  s.maxTokens = static_cast<int32_t>(maxTokens);
  s.sampling = ParseSampling(env, info[3], nVocab_);
  try {
    engine_->Submit(std::move(s));
  } catch (const CodedError& e) {
    Throw(env, e.code, e.what());
  }
  outstanding_++;
  HoldLoop(env, true);
  return env.Undefined();
}

Napi::Value Scheduler::Cancel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string id = Id(env, info[0]);
  if (finalized_) return Napi::String::New(env, "unknown");
  switch (engine_->Cancel(id)) {
    case Engine::CancelResult::Queued:
      Settled(env);  // the caller reports it cancelled; the engine never saw it run
      return Napi::String::New(env, "queued");
    case Engine::CancelResult::Running:
      return Napi::String::New(env, "running");
    default:
      return Napi::String::New(env, "unknown");
  }
}

Napi::Value Scheduler::Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EngineStats s = engine_->Stats();
  Napi::Object out = Napi::Object::New(env);
  out.Set("busyRows", s.busyRows);
  out.Set("queued", s.queued);
  out.Set("rows", s.rows);
  out.Set("kvCellsUsed", Napi::Number::New(env, static_cast<double>(s.kvCellsUsed)));
  out.Set("kvCells", Napi::Number::New(env, static_cast<double>(s.kvCells)));
  out.Set("promptTokensProcessed", Napi::Number::New(env, static_cast<double>(s.promptTokensProcessed)));
  out.Set("prefillSeconds", s.prefillSeconds);
  out.Set("decodeSeconds", s.decodeSeconds);
  out.Set("decodeSteps", Napi::Number::New(env, static_cast<double>(s.decodeSteps)));
  out.Set("tokensGenerated", Napi::Number::New(env, static_cast<double>(s.tokensGenerated)));
  return out;
}

Napi::Value Scheduler::Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Promise::Deferred deferred = Napi::Promise::Deferred::New(env);
  if (finalized_) {
    deferred.Resolve(env.Undefined());
    return deferred.Promise();
  }
  closeWaiters_.push_back(deferred);
  if (!closing_) {
    closing_ = true;
    HoldLoop(env, true);  // until the thread is joined and the promise resolved
    engine_->RequestClose();
  }
  return deferred.Promise();
}

void Scheduler::Deliver(Napi::Env env, Napi::Function onStep, std::vector<Event>* data) {
  std::unique_ptr<std::vector<Event>> events(data);
  if (env == nullptr) return;  // the environment is going away
  Napi::Array out = Napi::Array::New(env, events->size());
  uint32_t i = 0;
  for (const Event& e : *events) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("id", e.id);
    switch (e.kind) {
      case Event::Kind::Tokens: {
        Napi::Int32Array tokens = Napi::Int32Array::New(env, e.tokens.size());
        std::copy(e.tokens.begin(), e.tokens.end(), tokens.Data());
        o.Set("kind", "tokens");
        o.Set("tokens", tokens);
        break;
      }
      case Event::Kind::Done:
        o.Set("kind", "done");
        o.Set("reason", e.reason);
        o.Set("promptTokens", e.promptTokens);
        o.Set("generatedTokens", e.generatedTokens);
        Settled(env);
        break;
      case Event::Kind::Error:
        o.Set("kind", "error");
        o.Set("code", e.code);
        o.Set("message", e.message);
        Settled(env);
        break;
    }
    out.Set(i++, o);
  }
  try {
    onStep.Call({out});
  } catch (const Napi::Error& e) {
    // A throwing consumer is the consumer's bug: report it as an uncaught exception, keep the engine going.
    e.ThrowAsJavaScriptException();
  }
}

void Scheduler::Finalized(Napi::Env env) {
  finalized_ = true;
  // At environment teardown the thread may still be waiting for work: tell it to finish first.
  engine_->RequestClose();
  if (thread_.joinable()) thread_.join();
  model_->SchedulerClosed();
  modelRef_.Reset();
  for (Napi::Promise::Deferred& d : closeWaiters_) d.Resolve(env.Undefined());
  closeWaiters_.clear();
  Unref();
}

}  // namespace dbllama
