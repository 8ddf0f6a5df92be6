#include "sampling_params.h"

#include <cmath>
#include <string>

#include "errors.h"
#include "logprobs.h"

namespace darkbloom {
namespace {

double Number(Napi::Env env, Napi::Object obj, const char* key, double fallback) {
  Napi::Value v = obj.Get(key);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  if (!v.IsNumber()) Throw(env, code::kBadInput, std::string("sampling.") + key + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

void Check(Napi::Env env, bool ok, const char* key, const char* what) {
  if (!ok) Throw(env, code::kBadInput, std::string("sampling.") + key + " must be " + what);
}

}  // namespace

SamplingParams ParseSampling(Napi::Env env, Napi::Value value, int32_t nVocab) {
  SamplingParams p;
  if (value.IsUndefined() || value.IsNull()) return p;
  if (!value.IsObject()) Throw(env, code::kBadInput, "sampling must be an object");
  Napi::Object o = value.As<Napi::Object>();

  double t = Number(env, o, "temperature", p.temperature);
  Check(env, std::isfinite(t) && t >= 0, "temperature", "a finite number >= 0");
  double k = Number(env, o, "topK", p.topK);
  Check(env, k >= 0 && k <= nVocab && std::floor(k) == k, "topK", "an integer from 0 to the vocabulary size");
  double topP = Number(env, o, "topP", p.topP);
  Check(env, topP > 0 && topP <= 1, "topP", "in (0, 1]");
  double minP = Number(env, o, "minP", p.minP);
  Check(env, minP >= 0 && minP <= 1, "minP", "in [0, 1]");
  double rp = Number(env, o, "repeatPenalty", p.repeatPenalty);
  Check(env, std::isfinite(rp) && rp > 0, "repeatPenalty", "a finite number > 0");
  double pp = Number(env, o, "presencePenalty", p.presencePenalty);
  Check(env, std::isfinite(pp), "presencePenalty", "finite");
  double fp = Number(env, o, "frequencyPenalty", p.frequencyPenalty);
  Check(env, std::isfinite(fp), "frequencyPenalty", "finite");
  double lastN = Number(env, o, "penaltyLastN", p.penaltyLastN);
  Check(env, lastN >= 0 && lastN <= 1 << 20 && std::floor(lastN) == lastN, "penaltyLastN", "an integer >= 0");

  p.temperature = static_cast<float>(t);
  p.topK = static_cast<int32_t>(k);
  p.topP = static_cast<float>(topP);
  p.minP = static_cast<float>(minP);
  p.repeatPenalty = static_cast<float>(rp);
  p.presencePenalty = static_cast<float>(pp);
  p.frequencyPenalty = static_cast<float>(fp);
  p.penaltyLastN = static_cast<int32_t>(lastN);

  Napi::Value seed = o.Get("seed");
  if (!seed.IsUndefined() && !seed.IsNull()) {
    double s = seed.IsNumber() ? seed.As<Napi::Number>().DoubleValue() : -1;
    // kRandomSeed (2^32-1, llama.cpp's LLAMA_DEFAULT_SEED) means "random", so it is not a reproducible seed.
    Check(env, s >= 0 && s < 4294967295.0 && std::floor(s) == s, "seed", "an integer from 0 to 2^32-2");
    p.seed = static_cast<uint32_t>(s);
  }

  Napi::Value bias = o.Get("logitBias");
  if (!bias.IsUndefined() && !bias.IsNull()) {
    Check(env, bias.IsArray(), "logitBias", "an array of [token, bias] pairs");
    Napi::Array pairs = bias.As<Napi::Array>();
    for (uint32_t i = 0; i < pairs.Length(); i++) {
      Napi::Value pair = pairs.Get(i);
      bool ok = pair.IsArray() && pair.As<Napi::Array>().Length() == 2;
      Napi::Value tok = ok ? pair.As<Napi::Array>().Get(0u) : env.Undefined();
      Napi::Value b = ok ? pair.As<Napi::Array>().Get(1u) : env.Undefined();
      ok = ok && tok.IsNumber() && b.IsNumber();
      Check(env, ok, "logitBias", "an array of [token, bias] pairs");
      double token = tok.As<Napi::Number>().DoubleValue();
      double value = b.As<Napi::Number>().DoubleValue();
      Check(env, token >= 0 && token < nVocab && std::floor(token) == token, "logitBias",
            "pairs whose token is in the vocabulary");
      // -Infinity bans a token; NaN and +Infinity would poison the softmax.
      Check(env, !std::isnan(value) && value != INFINITY, "logitBias", "pairs with a bias that is finite or -Infinity");
      p.logitBias.push_back({static_cast<int32_t>(token), static_cast<float>(value)});
    }
  }

  Napi::Value logprobs = o.Get("logprobs");
  if (!logprobs.IsUndefined() && !logprobs.IsNull()) {
    double n = logprobs.IsNumber() ? logprobs.As<Napi::Number>().DoubleValue() : -1;
    // Absent is "none"; -1 is only the internal spelling of it, so it is refused like any other value.
    Check(env, n >= 0 && n <= kMaxLogprobs && std::floor(n) == n, "logprobs",
          ("an integer from 0 to " + std::to_string(kMaxLogprobs)).c_str());
    p.logprobs = static_cast<int32_t>(n);
  }

  Napi::Value grammar = o.Get("grammar");
  if (!grammar.IsUndefined() && !grammar.IsNull()) {
    Check(env, grammar.IsString(), "grammar", "a string");
    p.grammar = grammar.As<Napi::String>().Utf8Value();
    Check(env, !p.grammar.empty() && p.grammar.size() <= kMaxGrammarBytes, "grammar", "1 byte to 1 MiB of GBNF");
  }
  return p;
}

}  // namespace darkbloom
