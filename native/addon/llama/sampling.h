// Per-row sampling: parsing the JS options and building one llama_sampler chain per row.
#pragma once

#include <llama.h>
#include <napi.h>

#include <cstdint>
#include <vector>

namespace dbllama {

// The "off" value of every filter is the default, so an empty options object samples the model's raw
// distribution at temperature 1.
struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy
  int32_t topK = 0;          // 0 = off
  float topP = 1.0f;         // 1 = off
  float minP = 0.0f;         // 0 = off
  uint32_t seed = LLAMA_DEFAULT_SEED;  // absent: a random seed per request
  float repeatPenalty = 1.0f;          // 1 = off
  float presencePenalty = 0.0f;
  float frequencyPenalty = 0.0f;
  int32_t penaltyLastN = 64;
  std::vector<llama_logit_bias> logitBias;

  bool penalized() const {
    return penaltyLastN > 0 && (repeatPenalty != 1.0f || presencePenalty != 0.0f || frequencyPenalty != 0.0f);
  }
};

// Throws a bad_input JS error for anything out of range (tokens outside the vocabulary included).
SamplingParams ParseSampling(Napi::Env env, Napi::Value value, int32_t nVocab);

// A fresh chain owning its own RNG: a row's draws never depend on the other rows, so a seed
// reproduces its tokens in any batch.
llama_sampler* BuildSamplerChain(const SamplingParams& params, int32_t nVocab);

}  // namespace dbllama
