#include "scheduler_js.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "errors.h"

namespace darkbloom {
namespace {

// Deliveries the engine may run ahead of JS (each one step's events, or a few fast steps': outbox.h).
constexpr size_t kMaxQueuedDeliveries = 64;

// cancel's answer.
Napi::String CancelResultToJs(Napi::Env env, CancelResult result) {
  switch (result) {
    case CancelResult::Queued:
      return Napi::String::New(env, "queued");
    case CancelResult::Running:
      return Napi::String::New(env, "running");
    default:
      return Napi::String::New(env, "unknown");
  }
}

// A tokens event's logprobs: [{ logprob, topTokens: Int32Array, topLogprobs: Float32Array }], one per
// token. Typed arrays, not arrays of objects: up to 20 alternatives per token, on every token.
Napi::Array LogprobsToJs(Napi::Env env, const std::vector<TokenLogprobs>& logprobs) {
  Napi::Array out = Napi::Array::New(env, logprobs.size());
  for (uint32_t i = 0; i < logprobs.size(); i++) {
    const TokenLogprobs& lp = logprobs[i];
    Napi::Int32Array topTokens = Napi::Int32Array::New(env, lp.topTokens.size());
    std::copy(lp.topTokens.begin(), lp.topTokens.end(), topTokens.Data());
    Napi::Float32Array topLogprobs = Napi::Float32Array::New(env, lp.topLogprobs.size());
    std::copy(lp.topLogprobs.begin(), lp.topLogprobs.end(), topLogprobs.Data());
    Napi::Object entry = Napi::Object::New(env);
    entry.Set("logprob", Napi::Number::New(env, lp.logprob));
    entry.Set("topTokens", topTokens);
    entry.Set("topLogprobs", topLogprobs);
    out.Set(i, entry);
  }
  return out;
}

}  // namespace

std::string ParseRequestId(Napi::Env env, Napi::Value value) {
  if (!value.IsString()) Throw(env, code::kBadInput, "id must be a string");
  std::string id = value.As<Napi::String>().Utf8Value();
  if (id.empty() || id.size() > 1024) Throw(env, code::kBadInput, "id must be 1 to 1024 bytes");
  return id;
}

Submission ParseSubmission(Napi::Env env, const Napi::CallbackInfo& info, int32_t nVocab, int32_t contextPerRow) {
  Submission s;
  s.id = ParseRequestId(env, info[0]);
  if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    Throw(env, code::kBadInput, "prompt must be an Int32Array");
  Napi::Int32Array prompt = info[1].As<Napi::Int32Array>();
  if (prompt.ElementLength() == 0) Throw(env, code::kBadInput, "prompt must hold at least one token");
  for (size_t i = 0; i < prompt.ElementLength(); i++)
    if (prompt[i] < 0 || prompt[i] >= nVocab)
      Throw(env, code::kBadInput, "prompt token " + std::to_string(prompt[i]) + " is not in the vocabulary");
  double maxTokens = info[2].IsNumber() ? info[2].As<Napi::Number>().DoubleValue() : NAN;
  if (!(maxTokens >= 1 && maxTokens <= (1 << 24) && std::floor(maxTokens) == maxTokens))
    Throw(env, code::kBadInput, "maxTokens must be a positive integer");
  // The gate comes before anything runs: a row never runs out of KV cache mid-generation.
  if (static_cast<double>(prompt.ElementLength()) + maxTokens > contextPerRow)
    Throw(env, code::kContextLengthExceeded,
          "the prompt (" + std::to_string(prompt.ElementLength()) + " tokens) plus maxTokens (" +
              std::to_string(static_cast<int64_t>(maxTokens)) + ") exceeds the context per row (" +
              std::to_string(contextPerRow) + ")");
  s.prompt.assign(prompt.Data(), prompt.Data() + prompt.ElementLength());
  s.maxTokens = static_cast<int32_t>(maxTokens);
  s.sampling = ParseSampling(env, info[3], nVocab);
  return s;
}

Napi::Object StatsToJs(Napi::Env env, const BatchStats& s, std::optional<int64_t> kvBytes) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("busyRows", s.busyRows);
  out.Set("queued", s.queued);
  out.Set("rows", s.rows);
  out.Set("kvCellsUsed", Napi::Number::New(env, static_cast<double>(s.kvCellsUsed)));
  out.Set("kvCells", Napi::Number::New(env, static_cast<double>(s.kvCells)));
  if (kvBytes) out.Set("kvBytes", Napi::Number::New(env, static_cast<double>(*kvBytes)));
  out.Set("promptTokensProcessed", Napi::Number::New(env, static_cast<double>(s.promptTokensProcessed)));
  out.Set("prefillSeconds", s.prefillSeconds);
  out.Set("decodeSeconds", s.decodeSeconds);
  out.Set("decodeSteps", Napi::Number::New(env, static_cast<double>(s.decodeSteps)));
  out.Set("tokensGenerated", Napi::Number::New(env, static_cast<double>(s.tokensGenerated)));
  return out;
}

Napi::Array EventsToJs(Napi::Env env, const std::vector<Event>& events, const std::function<void()>& onTerminal) {
  Napi::Array out = Napi::Array::New(env, events.size());
  uint32_t i = 0;
  for (const Event& e : events) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("id", e.id);
    switch (e.kind) {
      case Event::Kind::Tokens: {
        Napi::Int32Array tokens = Napi::Int32Array::New(env, e.tokens.size());
        std::copy(e.tokens.begin(), e.tokens.end(), tokens.Data());
        o.Set("kind", "tokens");
        o.Set("tokens", tokens);
        if (!e.logprobs.empty()) o.Set("logprobs", LogprobsToJs(env, e.logprobs));
        break;
      }
      case Event::Kind::Done:
        o.Set("kind", "done");
        o.Set("reason", e.reason);
        o.Set("promptTokens", e.promptTokens);
        o.Set("generatedTokens", e.generatedTokens);
        onTerminal();
        break;
      case Event::Kind::Error:
        o.Set("kind", "error");
        o.Set("code", e.code);
        o.Set("message", e.message);
        onTerminal();
        break;
    }
    out.Set(i++, o);
  }
  return out;
}

void SchedulerJs::Start(Napi::Env env, Napi::Function onStep, const char* name, int32_t nVocab,
                        int32_t contextPerRow, std::function<void(Napi::Env)> finalized) {
  nVocab_ = nVocab;
  contextPerRow_ = contextPerRow;
  onFinalized_ = std::move(finalized);
  tsfn_ = Napi::ThreadSafeFunction::New(env, onStep, name, kMaxQueuedDeliveries, 1, this,
                                        [](Napi::Env env, SchedulerJs* self) { self->onFinalized_(env); });
  tsfn_.Unref(env);
}

bool SchedulerJs::Emit(std::vector<Event>&& events) {
  auto* data = new std::vector<Event>(std::move(events));
  auto deliver = [this](Napi::Env env, Napi::Function onStep, std::vector<Event>* d) {
    std::unique_ptr<std::vector<Event>> own(d);
    if (env == nullptr) return;  // the environment is going away
    Napi::Array out = EventsToJs(env, *own, [&] { Settled(env); });
    try {
      onStep.Call({out});
    } catch (const Napi::Error& e) {
      // A throwing consumer is the consumer's bug: report it as an uncaught exception, keep the engine going.
      e.ThrowAsJavaScriptException();
    }
  };
  napi_status status = tsfn_.BlockingCall(data, deliver);
  if (status != napi_ok) delete data;
  return status == napi_ok;
}

Napi::Value SchedulerJs::Submit(const Napi::CallbackInfo& info, SchedulerCore& core) {
  Napi::Env env = info.Env();
  if (closing_ || finalized_) Throw(env, code::kClosed, "the scheduler is closed");
  Submission s = ParseSubmission(env, info, nVocab_, contextPerRow_);
  try {
    core.Submit(std::move(s));
  } catch (const CodedError& e) {
    Throw(env, e.code, e.what());
  }
  outstanding_++;
  HoldLoop(env, true);
  return env.Undefined();
}

Napi::Value SchedulerJs::Cancel(const Napi::CallbackInfo& info, SchedulerCore& core) {
  Napi::Env env = info.Env();
  std::string id = ParseRequestId(env, info[0]);
  if (finalized_) return CancelResultToJs(env, CancelResult::Unknown);
  CancelResult result = core.Cancel(id);
  if (result == CancelResult::Queued) Settled(env);  // the caller reports it cancelled; the engine never saw it run
  return CancelResultToJs(env, result);
}

Napi::Value SchedulerJs::Close(const Napi::CallbackInfo& info, SchedulerCore& core) {
  Napi::Env env = info.Env();
  Napi::Promise::Deferred deferred = Napi::Promise::Deferred::New(env);
  if (finalized_) {
    deferred.Resolve(env.Undefined());
    return deferred.Promise();
  }
  closeWaiters_.push_back(deferred);
  if (!closing_) {
    closing_ = true;
    HoldLoop(env, true);  // until the engine is done with the scheduler and the promise resolved
    core.RequestClose();
  }
  return deferred.Promise();
}

void SchedulerJs::Finalized(Napi::Env env) {
  finalized_ = true;
  for (Napi::Promise::Deferred& d : closeWaiters_) d.Resolve(env.Undefined());
  closeWaiters_.clear();
}

void SchedulerJs::Settled(Napi::Env env) {
  if (--outstanding_ <= 0 && !closing_) HoldLoop(env, false);
}

void SchedulerJs::HoldLoop(Napi::Env env, bool hold) {
  if (finalized_ || hold == holding_) return;
  if (hold)
    tsfn_.Ref(env);
  else
    tsfn_.Unref(env);
  holding_ = hold;
}

}  // namespace darkbloom
