// Per-row sampling options, backend-independent: parsed from JS once here, then turned into a
// llama_sampler chain (llama/sampling.cc) or run by the MLX backend's host sampler (mlx/sampler.cc).
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

namespace darkbloom {

struct LogitBias {
  int32_t token;
  float bias;
};

// The "off" value of every filter is the default, so an empty options object samples the model's raw
// distribution at temperature 1.
struct SamplingParams {
  // No seed given: each backend draws a random one per request (llama.cpp's LLAMA_DEFAULT_SEED).
  static constexpr uint32_t kRandomSeed = 0xFFFFFFFFu;

  float temperature = 1.0f;  // 0 = greedy
  int32_t topK = 0;          // 0 = off
  float topP = 1.0f;         // 1 = off
  float minP = 0.0f;         // 0 = off
  uint32_t seed = kRandomSeed;
  float repeatPenalty = 1.0f;  // 1 = off
  float presencePenalty = 0.0f;
  float frequencyPenalty = 0.0f;
  int32_t penaltyLastN = 64;
  std::vector<LogitBias> logitBias;
  // A GBNF grammar (root rule "root") every sampled token must keep the output in; empty = none.
  // Only backends that can enforce one accept it (BatchCore's CheckSampling hook).
  std::string grammar;
  // Log-probabilities to report per generated token: -1 = none; 0 = the sampled token's only; n = also
  // the n most likely alternatives (at most kMaxLogprobs). Of the raw distribution (logprobs.h), so
  // they change nothing sampled.
  int32_t logprobs = -1;

  bool penalized() const {
    return penaltyLastN > 0 && (repeatPenalty != 1.0f || presencePenalty != 0.0f || frequencyPenalty != 0.0f);
  }
};

// The longest grammar accepted: a structured-output schema's grammar is a few KiB; this bounds the
// parse a request can make a backend do.
inline constexpr size_t kMaxGrammarBytes = 1 << 20;

// Throws a bad_input JS error for anything out of range (tokens outside the vocabulary included).
SamplingParams ParseSampling(Napi::Env env, Napi::Value value, int32_t nVocab);

}  // namespace darkbloom
