// Model: loading (off the JS thread), tokenizer functions, metadata, and creating schedulers.
#include "model.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <thread>

#include "common.h"

namespace dbllama {

const napi_type_tag kInternalTag = {0x6461726b626c6f6fULL, 0x6d6c6c616d613031ULL};

namespace {

bool Tagged(Napi::Value v) { return v.IsExternal() && v.As<Napi::Object>().CheckTypeTag(&kInternalTag); }

int32_t IntOption(Napi::Env env, Napi::Object o, const char* key, int32_t fallback, int64_t min, int64_t max) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
  if (!(d >= min && d <= max && std::floor(d) == d))
    Throw(env, code::kBadInput,
          std::string(key) + " must be an integer from " + std::to_string(min) + " to " + std::to_string(max));
  return static_cast<int32_t>(d);
}

std::string Failure(const char* what) {
  std::string why = TakeLastLlamaError();
  return why.empty() ? std::string(what) : std::string(what) + ": " + why;
}

// llama_model_load_from_file reads and maps the whole file: seconds for a large model, so never on the
// JS thread.
class LoadWorker : public Napi::AsyncWorker {
 public:
  LoadWorker(Napi::Env env, std::string path, int32_t gpuLayers)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), path_(std::move(path)),
        gpuLayers_(gpuLayers) {}
  ~LoadWorker() override {
    if (model_) llama_model_free(model_);
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    llama_model_params params = llama_model_default_params();
    params.n_gpu_layers = gpuLayers_;
    TakeLastLlamaError();
    model_ = llama_model_load_from_file(path_.c_str(), params);
    if (!model_) error_ = Failure(("cannot load the model " + path_).c_str());
  }
  void OnOK() override {
    Napi::Env env = Env();
    if (!model_) {
      deferred_.Reject(JsError(env, code::kModelLoadFailed, error_).Value());
      return;
    }
    try {
      Napi::External<llama_model> ext = Napi::External<llama_model>::New(env, model_);
      ext.TypeTag(&kInternalTag);
      Napi::Object model = env.GetInstanceData<AddonData>()->modelClass.New({ext});
      model_ = nullptr;  // the Model owns it now
      deferred_.Resolve(model);
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::string path_;
  int32_t gpuLayers_;
  llama_model* model_ = nullptr;
  std::string error_;
};

// llama_init_from_model allocates the whole KV cache (gigabytes for long contexts): off the JS thread.
class CreateSchedulerWorker : public Napi::AsyncWorker {
 public:
  CreateSchedulerWorker(Napi::Env env, Model* model, Napi::Object modelObject, Napi::Function onStep,
                        llama_context_params params, EngineOptions options)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), params_(params) {
    init_.model = model;
    init_.options = options;
    modelRef_ = Napi::Persistent(modelObject);
    onStep_ = Napi::Persistent(onStep);
  }
  ~CreateSchedulerWorker() override {
    if (init_.ctx) llama_free(init_.ctx);
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    TakeLastLlamaError();
    init_.ctx = llama_init_from_model(init_.model->model(), params_);
    if (!init_.ctx) error_ = Failure("cannot create the llama context");
  }
  void OnOK() override {
    Napi::Env env = Env();
    if (!init_.ctx) {
      init_.model->SchedulerClosed();
      deferred_.Reject(JsError(env, code::kEngineFailed, error_).Value());
      return;
    }
    try {
      Napi::External<SchedulerInit> ext = Napi::External<SchedulerInit>::New(env, &init_);
      ext.TypeTag(&kInternalTag);
      Napi::Object scheduler =
          env.GetInstanceData<AddonData>()->schedulerClass.New({ext, onStep_.Value(), modelRef_.Value()});
      deferred_.Resolve(scheduler);
    } catch (const Napi::Error& e) {
      if (init_.ctx) init_.model->SchedulerClosed();  // the constructor did not take it
      deferred_.Reject(e.Value());
    }
  }

 private:
  Napi::Promise::Deferred deferred_;
  llama_context_params params_;
  SchedulerInit init_;
  Napi::ObjectReference modelRef_;
  Napi::FunctionReference onStep_;
  std::string error_;
};

}  // namespace

Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) Throw(env, code::kBadInput, "path must be a string");
  int32_t gpuLayers = 0;
  if (info[1].IsObject()) gpuLayers = IntOption(env, info[1].As<Napi::Object>(), "gpuLayers", 0, -1, 100000);
  auto* worker = new LoadWorker(env, info[0].As<Napi::String>().Utf8Value(), gpuLayers);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Function Model::Define(Napi::Env env) {
  return DefineClass(env, "LlamaModel",
                     {
                         InstanceMethod<&Model::Tokenize>("tokenize"),
                         InstanceMethod<&Model::Piece>("piece"),
                         InstanceMethod<&Model::IsEog>("isEog"),
                         InstanceMethod<&Model::Info>("info"),
                         InstanceMethod<&Model::CreateScheduler>("createScheduler"),
                         InstanceMethod<&Model::Close>("close"),
                     });
}

Model::Model(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Model>(info) {
  if (!Tagged(info[0])) Throw(info.Env(), code::kBadInput, "models come from loadModel()");
  model_ = info[0].As<Napi::External<llama_model>>().Data();
}

Model::~Model() {
  if (model_) llama_model_free(model_);
}

llama_model* Model::Open(Napi::Env env) const {
  if (!model_) Throw(env, code::kClosed, "the model is closed");
  return model_;
}

llama_token Model::Token(Napi::Env env, Napi::Value value) const {
  int32_t n = llama_vocab_n_tokens(llama_model_get_vocab(Open(env)));
  double d = value.IsNumber() ? value.As<Napi::Number>().DoubleValue() : NAN;
  if (!(d >= 0 && d < n && std::floor(d) == d))
    Throw(env, code::kBadInput, "token must be an integer from 0 to " + std::to_string(n - 1));
  return static_cast<llama_token>(d);
}

Napi::Value Model::Tokenize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const llama_vocab* vocab = llama_model_get_vocab(Open(env));
  if (!info[0].IsString()) Throw(env, code::kBadInput, "text must be a string");
  std::string text = info[0].As<Napi::String>().Utf8Value();
  if (text.size() > INT32_MAX / 2) Throw(env, code::kBadInput, "text is too long");
  bool addSpecial = info[1].ToBoolean();
  bool parseSpecial = info[2].ToBoolean();
  // At most one token per byte, plus BOS/EOS; a negative count is the size actually needed.
  std::vector<llama_token> tokens(text.size() + 2);
  int32_t n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                             static_cast<int32_t>(tokens.size()), addSpecial, parseSpecial);
  if (n < 0 && n != INT32_MIN) {
    tokens.resize(static_cast<size_t>(-n));
    n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                       static_cast<int32_t>(tokens.size()), addSpecial, parseSpecial);
  }
  if (n < 0) Throw(env, code::kBadInput, "the text cannot be tokenized");
  Napi::Int32Array out = Napi::Int32Array::New(env, static_cast<size_t>(n));
  std::copy(tokens.begin(), tokens.begin() + n, out.Data());
  return out;
}

// piece(token, special = true). special false renders control tokens as nothing, as llama_detokenize
// (node-llama-cpp's detokenize(tokens, false)) does for text: a logprobs alternative that is an end of
// turn then shows as the empty string the text would have, not as its <|im_end|> markup.
Napi::Value Model::Piece(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  llama_token token = Token(env, info[0]);
  if (!info[1].IsUndefined() && !info[1].IsBoolean()) Throw(env, code::kBadInput, "special must be a boolean");
  const bool special = info[1].IsUndefined() || info[1].As<Napi::Boolean>().Value();
  const llama_vocab* vocab = llama_model_get_vocab(model_);
  std::vector<char> buf(64);
  int32_t n = llama_token_to_piece(vocab, token, buf.data(), static_cast<int32_t>(buf.size()), 0, special);
  if (n < 0) {
    buf.resize(static_cast<size_t>(-n));
    n = llama_token_to_piece(vocab, token, buf.data(), static_cast<int32_t>(buf.size()), 0, special);
  }
  if (n < 0) Throw(env, code::kBadInput, "the token has no text");
  Napi::Uint8Array out = Napi::Uint8Array::New(env, static_cast<size_t>(n));
  std::copy(buf.begin(), buf.begin() + n, out.Data());
  return out;
}

Napi::Value Model::IsEog(const Napi::CallbackInfo& info) {
  llama_token token = Token(info.Env(), info[0]);
  return Napi::Boolean::New(info.Env(), llama_vocab_is_eog(llama_model_get_vocab(model_), token));
}

Napi::Value Model::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  llama_model* model = Open(env);
  const llama_vocab* vocab = llama_model_get_vocab(model);
  auto token = [&](llama_token t) { return t == LLAMA_TOKEN_NULL ? env.Null() : Napi::Number::New(env, t); };
  Napi::Object out = Napi::Object::New(env);
  out.Set("nCtxTrain", llama_model_n_ctx_train(model));
  out.Set("nVocab", llama_vocab_n_tokens(vocab));
  out.Set("bos", token(llama_vocab_bos(vocab)));
  out.Set("eos", token(llama_vocab_eos(vocab)));
  std::vector<char> arch(256);
  int32_t n = llama_model_meta_val_str(model, "general.architecture", arch.data(), arch.size());
  out.Set("architecture", n >= 0 ? Napi::String::New(env, arch.data()) : env.Null());
  const char* tmpl = llama_model_chat_template(model, nullptr);
  out.Set("chatTemplate", tmpl ? Napi::String::New(env, tmpl) : env.Null());
  out.Set("sizeBytes", Napi::Number::New(env, static_cast<double>(llama_model_size(model))));
  return out;
}

Napi::Value Model::CreateScheduler(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  llama_model* model = Open(env);
  if (!info[0].IsObject()) Throw(env, code::kBadInput, "options must be an object");
  if (!info[1].IsFunction()) Throw(env, code::kBadInput, "onStep must be a function");
  Napi::Object o = info[0].As<Napi::Object>();
  EngineOptions options;
  // LLAMA_MAX_SEQ is 256: the most sequences one context holds.
  options.rows = IntOption(env, o, "rows", 1, 1, 256);
  options.contextPerRow = IntOption(env, o, "contextPerRow", llama_model_n_ctx_train(model), 1, 1 << 20);
  options.prefillChunk = IntOption(env, o, "prefillChunk", 512, 1, 8192);
  options.queueDepth = IntOption(env, o, "queueDepth", 64, 0, 1 << 20);
  options.deliveryIntervalUs = IntOption(env, o, "deliveryIntervalUs", darkbloom::kDefaultDeliveryIntervalUs, 0, 1000000);
  int32_t threads = IntOption(env, o, "threads", static_cast<int32_t>(std::min(4u, std::thread::hardware_concurrency())), 1, 1024);
  if (static_cast<int64_t>(options.rows) * options.contextPerRow > (1 << 24))
    Throw(env, code::kBadInput, "rows * contextPerRow must be at most 2^24 KV cells");
  ggml_type kv = GGML_TYPE_F16;
  Napi::Value kvType = o.Get("kvType");
  if (!kvType.IsUndefined()) {
    std::string t = kvType.IsString() ? kvType.As<Napi::String>().Utf8Value() : "";
    if (t == "q8_0")
      kv = GGML_TYPE_Q8_0;
    else if (t == "q4_0")
      kv = GGML_TYPE_Q4_0;
    else if (t != "f16")
      Throw(env, code::kBadInput, "kvType must be f16, q8_0 or q4_0");
  }

  llama_context_params params = llama_context_default_params();
  params.n_ctx = static_cast<uint32_t>(options.rows * options.contextPerRow);
  params.n_seq_max = static_cast<uint32_t>(options.rows);
  // One ubatch must hold a whole prefill chunk and a whole decode step (see engine.cc).
  params.n_batch = params.n_ubatch = static_cast<uint32_t>(std::max(options.prefillChunk, options.rows));
  params.n_threads = params.n_threads_batch = threads;
  // A non-unified cache gives every row its own contextPerRow cells (rounded up to 256).
  params.kv_unified = false;
  params.type_k = params.type_v = kv;
  // Flash attention only where a quantized cache needs it. Over an F16 cache it would keep V
  // untransposed (decode would no longer slow with the cells a row holds, prefill would be 10-40%
  // faster), but ggml's CPU kernel walks a row's cells one at a time: at 2,048 cells in use it decoded
  // qwen3-0.6b 46% slower at batch 4 than without it (docs/BENCHMARKS.md), and it splits a lone row's
  // cells across threads, which breaks batch invariance (engine.cc, fact 3).
  params.flash_attn_type = kv == GGML_TYPE_F16 ? LLAMA_FLASH_ATTN_TYPE_DISABLED : LLAMA_FLASH_ATTN_TYPE_ENABLED;
  params.no_perf = true;

  openSchedulers_++;
  auto* worker = new CreateSchedulerWorker(env, this, Value(), info[1].As<Napi::Function>(), params, options);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value Model::Close(const Napi::CallbackInfo& info) {
  if (openSchedulers_ > 0) Throw(info.Env(), code::kBusy, "close the model's schedulers first");
  if (model_) llama_model_free(model_);
  model_ = nullptr;
  return info.Env().Undefined();
}

}  // namespace dbllama
