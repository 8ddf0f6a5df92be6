// darkbloom_llama: a continuous-batching inference core over llama.cpp (CPU, statically linked).
// JS API (see src/llama.ts): loadModel(path, {gpuLayers}) → Promise<LlamaModel>; systemInfo().
#include <llama.h>
#include <napi.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>

#include "common.h"
#include "model.h"

namespace dbllama {

Napi::Value LoadModel(const Napi::CallbackInfo& info);

namespace {

thread_local std::string lastError;
thread_local bool lastWasError = false;
bool verbose = false;

// llama.cpp logs to stderr by default; a library in a daemon must not. Errors are kept for the
// JS error message; DARKBLOOM_LLAMA_LOG=1 shows the whole log for debugging.
void OnLog(ggml_log_level level, const char* text, void*) {
  if (level == GGML_LOG_LEVEL_ERROR) {
    lastError = text;
    lastWasError = true;
  } else if (level == GGML_LOG_LEVEL_CONT && lastWasError) {
    lastError += text;
  } else {
    lastWasError = false;
  }
  if (verbose) std::fputs(text, stderr);
}

Napi::Value SystemInfo(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), llama_print_system_info());
}

}  // namespace

void InstallLogHandler() {
  const char* v = std::getenv("DARKBLOOM_LLAMA_LOG");
  verbose = v != nullptr && std::string(v) == "1";
  llama_log_set(OnLog, nullptr);
}

std::string TakeLastLlamaError() {
  std::string e = std::move(lastError);
  lastError.clear();
  while (!e.empty() && (e.back() == '\n' || e.back() == ' ')) e.pop_back();
  return e;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  static std::once_flag backend;
  std::call_once(backend, [] {
    InstallLogHandler();
    llama_backend_init();
  });
  auto* data = new AddonData();
  data->modelClass = Napi::Persistent(Model::Define(env));
  data->schedulerClass = Napi::Persistent(Scheduler::Define(env));
  env.SetInstanceData(data);
  exports.Set("loadModel", Napi::Function::New<LoadModel>(env, "loadModel"));
  exports.Set("systemInfo", Napi::Function::New<SystemInfo>(env, "systemInfo"));
  return exports;
}

}  // namespace dbllama

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return dbllama::Init(env, exports); }

NODE_API_MODULE(darkbloom_llama, InitAddon)
