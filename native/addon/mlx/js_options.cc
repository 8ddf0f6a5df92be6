// What JS hands the MLX addon, checked and turned into the core's types: a checkpoint's config
// (src/mlx.ts reads config.json and lists the safetensors) and a scheduler's options. Every bad value
// is a bad_input error naming the field.
#include "js_options.h"

#include <cmath>
#include <string>

#include "../common/errors.h"

namespace dbmlx {

using ::darkbloom::Throw;

double Num(Napi::Value v) { return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN; }

int32_t IntOption(Napi::Env env, Napi::Object o, const char* key, int32_t fallback, int64_t min, int64_t max) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  double d = Num(v);
  if (!(d >= min && d <= max && std::floor(d) == d))
    Throw(env, code::kBadInput,
          std::string(key) + " must be an integer from " + std::to_string(min) + " to " + std::to_string(max));
  return static_cast<int32_t>(d);
}

float FloatOption(Napi::Env env, Napi::Object o, const char* key, float fallback) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  double d = Num(v);
  if (!std::isfinite(d)) Throw(env, code::kBadInput, std::string("config.") + key + " must be a finite number");
  return static_cast<float>(d);
}

ModelConfig ParseConfig(Napi::Env env, Napi::Value value) {
  if (!value.IsObject()) Throw(env, code::kBadInput, "config must be an object");
  Napi::Object o = value.As<Napi::Object>();
  ModelConfig c;
  Napi::Value arch = o.Get("architecture");
  if (!arch.IsString()) Throw(env, code::kBadInput, "config.architecture must be a string");
  c.architecture = arch.As<Napi::String>().Utf8Value();
  constexpr int64_t kMax = 1 << 24;
  c.hidden = IntOption(env, o, "hiddenSize", 0, 1, kMax);
  c.layers = IntOption(env, o, "numHiddenLayers", 0, 1, 4096);
  c.intermediate = IntOption(env, o, "intermediateSize", 0, 1, kMax);
  c.heads = IntOption(env, o, "numAttentionHeads", 0, 1, 4096);
  c.kvHeads = IntOption(env, o, "numKeyValueHeads", c.heads, 1, 4096);
  c.headDim = IntOption(env, o, "headDim", c.heads ? c.hidden / c.heads : 0, 1, 65536);
  c.vocab = IntOption(env, o, "vocabSize", 0, 1, kMax);
  c.maxPositionEmbeddings = IntOption(env, o, "maxPositionEmbeddings", 0, 0, 1 << 30);
  c.rmsEps = FloatOption(env, o, "rmsNormEps", 1e-6f);
  c.ropeTheta = FloatOption(env, o, "ropeTheta", 10000.0f);
  c.ropeTraditional = o.Get("ropeTraditional").ToBoolean();
  c.tieWordEmbeddings = o.Get("tieWordEmbeddings").ToBoolean();
  Napi::Value scaling = o.Get("ropeScaling");
  if (scaling.IsObject()) {
    Napi::Object s = scaling.As<Napi::Object>();
    Napi::Value type = s.Get("type");
    c.ropeType = type.IsString() ? type.As<Napi::String>().Utf8Value() : "default";
    c.ropeFactor = FloatOption(env, s, "factor", 1.0f);
    c.ropeLowFreqFactor = FloatOption(env, s, "lowFreqFactor", 1.0f);
    c.ropeHighFreqFactor = FloatOption(env, s, "highFreqFactor", 4.0f);
    c.ropeOriginalMaxPositions = FloatOption(env, s, "originalMaxPositionEmbeddings", 8192.0f);
  }
  Napi::Value eos = o.Get("eosTokenIds");
  if (eos.IsArray()) {
    Napi::Array a = eos.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++) {
      double d = Num(a.Get(i));
      if (!(d >= 0 && d < c.vocab && std::floor(d) == d))
        Throw(env, code::kBadInput, "config.eosTokenIds must be tokens of the vocabulary");
      c.eosTokens.push_back(static_cast<int32_t>(d));
    }
  }
  Napi::Value files = o.Get("files");
  if (!files.IsArray()) Throw(env, code::kBadInput, "config.files must be an array of paths");
  Napi::Array f = files.As<Napi::Array>();
  for (uint32_t i = 0; i < f.Length(); i++) {
    Napi::Value p = f.Get(i);
    if (!p.IsString()) Throw(env, code::kBadInput, "config.files must be an array of paths");
    c.files.push_back(p.As<Napi::String>().Utf8Value());
  }
  return c;
}

SchedulerOptions ParseSchedulerOptions(Napi::Env env, Napi::Object o, const ModelConfig& model) {
  SchedulerOptions options;
  options.rows = IntOption(env, o, "rows", 1, 1, 256);
  int32_t trained = model.maxPositionEmbeddings > 0 ? model.maxPositionEmbeddings : 4096;
  options.contextPerRow = IntOption(env, o, "contextPerRow", trained, 1, 1 << 20);
  options.prefillChunk = IntOption(env, o, "prefillChunk", 512, 1, 8192);
  options.queueDepth = IntOption(env, o, "queueDepth", 64, 0, 1 << 20);
  options.deliveryIntervalUs = IntOption(env, o, "deliveryIntervalUs", darkbloom::kDefaultDeliveryIntervalUs, 0, 1000000);
  options.kvBits = IntOption(env, o, "kvBits", 0, 0, 8);
  if (options.kvBits != 0 && options.kvBits != 4 && options.kvBits != 8)
    Throw(env, code::kBadInput, "kvBits must be 4 or 8 (or absent)");
  if (options.kvBits && model.headDim % 32 != 0)
    Throw(env, code::kBadInput, "a quantized KV cache needs a head dimension divisible by 32");
  if (static_cast<int64_t>(options.rows) * options.contextPerRow > (1 << 24))
    Throw(env, code::kBadInput, "rows * contextPerRow must be at most 2^24 KV cells");
  return options;
}

}  // namespace dbmlx
