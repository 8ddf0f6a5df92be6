// Scheduler: the JS face of an Engine, which runs on a thread of its own. What the JS methods do is
// the MLX scheduler's too (../common/scheduler_js.h: SchedulerJs).
#include "common.h"
#include "model.h"

namespace dbllama {

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
  js_.Start(env, info[1].As<Napi::Function>(), "darkbloom-llama-scheduler",
            llama_vocab_n_tokens(llama_model_get_vocab(model_->model())), init->options.contextPerRow,
            [this](Napi::Env env) { Finalized(env); });
  auto emit = [this](std::vector<Event>&& events) { return js_.Emit(std::move(events)); };
  engine_ = std::make_unique<Engine>(model_->model(), init->ctx, init->options, emit);
  init->ctx = nullptr;  // the engine owns it: nothing above may throw after this
  // The wrapper must outlive its thread: released in Finalized, after the join.
  Ref();
  thread_ = std::thread([this] {
    engine_->Run();
    js_.tsfn().Release();
  });
}

Scheduler::~Scheduler() {
  // Normally Finalized joined the thread already; this covers an environment torn down first.
  if (thread_.joinable()) {
    engine_->RequestClose();
    js_.tsfn().Abort();
    thread_.join();
  }
}

Napi::Value Scheduler::Submit(const Napi::CallbackInfo& info) { return js_.Submit(info, *engine_); }

Napi::Value Scheduler::Cancel(const Napi::CallbackInfo& info) { return js_.Cancel(info, *engine_); }

Napi::Value Scheduler::Stats(const Napi::CallbackInfo& info) { return StatsToJs(info.Env(), engine_->CurrentStats()); }

Napi::Value Scheduler::Close(const Napi::CallbackInfo& info) { return js_.Close(info, *engine_); }

void Scheduler::Finalized(Napi::Env env) {
  // At environment teardown the thread may still be waiting for work: tell it to finish first.
  engine_->RequestClose();
  if (thread_.joinable()) thread_.join();
  model_->SchedulerClosed();
  modelRef_.Reset();
  js_.Finalized(env);
  Unref();
}

}  // namespace dbllama
