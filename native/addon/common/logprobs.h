// Per-token log-probabilities, as OpenAI's API reports them: of the model's raw distribution, the
// log_softmax of a row's logits before anything the sampler does to them (logit bias, penalties, a
// grammar, temperature, top-k/top-p/min-p). That is what vLLM reports by default and llama-server
// with post_sampling_probs off, so a client sees the same numbers whichever engine served it, and the
// numbers say what the model thinks, not what this request's sampling options made of it.
#pragma once

#include <cstdint>
#include <vector>

namespace darkbloom {

// The most alternatives a request may ask for: OpenAI's top_logprobs limit.
inline constexpr int32_t kMaxLogprobs = 20;

// One generated token's: its own log-probability and the most likely tokens of the same distribution.
struct TokenLogprobs {
  float logprob = 0;
  std::vector<int32_t> topTokens;  // most likely first; equal logits by token id, lowest first
  std::vector<float> topLogprobs;  // aligned with topTokens
};

// From a row's raw logits (nVocab floats): the log-probability of `token` and of the n most likely
// tokens (fewer when the vocabulary is smaller; none for n = 0). -inf logits are tokens of probability
// 0 (log-probability -inf).
TokenLogprobs ComputeLogprobs(const float* logits, int32_t nVocab, int32_t token, int32_t n);

}  // namespace darkbloom
