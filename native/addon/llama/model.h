// The JS classes: Model (a loaded GGUF) and Scheduler (an engine thread over one context of it).
#pragma once

#include <llama.h>
#include <napi.h>

#include <memory>
#include <thread>
#include <vector>

#include "../common/scheduler_js.h"
#include "engine.h"

namespace dbllama {

// Constructors are reached only through loadModel / createScheduler, which hand them an External
// tagged with this; anything else (`new (model.constructor)()`) is refused instead of crashing.
extern const napi_type_tag kInternalTag;

struct AddonData {
  Napi::FunctionReference modelClass;
  Napi::FunctionReference schedulerClass;
};

class Model : public Napi::ObjectWrap<Model> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit Model(const Napi::CallbackInfo& info);
  ~Model() override;

  llama_model* model() const { return model_; }
  void SchedulerClosed() { openSchedulers_--; }

 private:
  llama_model* Open(Napi::Env env) const;
  llama_token Token(Napi::Env env, Napi::Value value) const;
  Napi::Value Tokenize(const Napi::CallbackInfo& info);
  Napi::Value Piece(const Napi::CallbackInfo& info);
  Napi::Value IsEog(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value CreateScheduler(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  llama_model* model_ = nullptr;
  int32_t openSchedulers_ = 0;  // including ones still being created; the model outlives them all
};

// What createScheduler's worker hands the Scheduler constructor.
struct SchedulerInit {
  Model* model = nullptr;
  llama_context* ctx = nullptr;  // taken by the engine
  EngineOptions options;
};

class Scheduler : public Napi::ObjectWrap<Scheduler> {
 public:
  static Napi::Function Define(Napi::Env env);
  // (External<SchedulerInit>, onStep(events), model object)
  explicit Scheduler(const Napi::CallbackInfo& info);
  ~Scheduler() override;

 private:
  Napi::Value Submit(const Napi::CallbackInfo& info);
  Napi::Value Cancel(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  void Finalized(Napi::Env env);

  Model* model_ = nullptr;
  Napi::ObjectReference modelRef_;  // keeps the model alive while this scheduler uses it
  std::unique_ptr<Engine> engine_;
  std::thread thread_;
  SchedulerJs js_;
};

}  // namespace dbllama
