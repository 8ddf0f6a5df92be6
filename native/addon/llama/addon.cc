// darkbloom_llama: a continuous-batching inference core over llama.cpp (statically linked, for the
// CPU and, where build-llama.mjs found the toolkit, CUDA; Metal on a Mac).
// JS API (see src/llama.ts): loadModel(path, {gpuLayers}) → Promise<LlamaModel>; systemInfo();
// hardware().
#include <ggml-backend.h>
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

const char* DeviceTypeName(enum ggml_backend_dev_type type) {
  switch (type) {
    case GGML_BACKEND_DEVICE_TYPE_CPU:
      return "cpu";
    case GGML_BACKEND_DEVICE_TYPE_GPU:
      return "gpu";
    case GGML_BACKEND_DEVICE_TYPE_IGPU:
      return "igpu";
    case GGML_BACKEND_DEVICE_TYPE_ACCEL:
      return "accel";
    default:
      return "meta";
  }
}

// What the engine can compute on, as ggml's registry has it: the backends compiled in (CUDA's is
// registered even where its runtime finds no GPU) and the devices they found, with their memory now.
// The engine reports this rather than what the build asked for: a CUDA build on a machine whose
// driver is missing has only its CPU device.
Napi::Value Hardware(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array backends = Napi::Array::New(env);
  for (size_t i = 0; i < ggml_backend_reg_count(); i++)
    backends.Set(static_cast<uint32_t>(i), ggml_backend_reg_name(ggml_backend_reg_get(i)));
  Napi::Array devices = Napi::Array::New(env);
  for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
    ggml_backend_dev_t dev = ggml_backend_dev_get(i);
    ggml_backend_dev_props props;
    ggml_backend_dev_get_props(dev, &props);
    Napi::Object d = Napi::Object::New(env);
    d.Set("name", props.name ? props.name : "");
    d.Set("description", props.description ? props.description : "");
    d.Set("backend", ggml_backend_reg_name(ggml_backend_dev_backend_reg(dev)));
    d.Set("type", DeviceTypeName(props.type));
    d.Set("memoryFree", static_cast<double>(props.memory_free));
    d.Set("memoryTotal", static_cast<double>(props.memory_total));
    devices.Set(static_cast<uint32_t>(i), d);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("backends", backends);
  out.Set("devices", devices);
  return out;
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
  exports.Set("hardware", Napi::Function::New<Hardware>(env, "hardware"));
  return exports;
}

}  // namespace dbllama

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return dbllama::Init(env, exports); }

NODE_API_MODULE(darkbloom_llama, InitAddon)
