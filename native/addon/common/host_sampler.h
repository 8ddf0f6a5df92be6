// Per-row sampling over a logits vector on the host, for backends without llama.cpp's samplers (MLX).
// The same options and order as the llama backend's chain (llama/sampling.cc): logit bias, penalties
// over the last penaltyLastN tokens recorded (the engine records the sampled ones), then greedy, or
// top-k, top-p, min-p, temperature and one draw from the row's own RNG, so a seed reproduces its
// tokens in any batch.
#pragma once

#include <cstdint>
#include <deque>
#include <random>
#include <unordered_map>
#include <utility>
#include <vector>

#include "sampling_params.h"

namespace darkbloom {

class HostSampler {
 public:
  HostSampler(const SamplingParams& params, int32_t nVocab);

  // The next token from one row's logits (nVocab floats); does not record it (Accept does). The logits
  // are left as they are (biases and penalties change a copy): the logprobs read them raw afterwards.
  int32_t Sample(const float* logits);
  // Records a token the penalties look back over.
  void Accept(int32_t token);

 private:
  SamplingParams p_;
  int32_t nVocab_;
  std::mt19937 rng_;
  std::deque<int32_t> window_;                 // the last penaltyLastN tokens
  std::unordered_map<int32_t, int32_t> counts_;  // of the window
  std::vector<float> logits_;
  std::vector<std::pair<float, int32_t>> candidates_;
  std::vector<double> weights_;
};

}  // namespace darkbloom
