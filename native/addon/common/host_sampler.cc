#include "host_sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace darkbloom {

HostSampler::HostSampler(const SamplingParams& params, int32_t nVocab)
    : p_(params), nVocab_(nVocab), rng_(params.seed == SamplingParams::kRandomSeed ? std::random_device{}() : params.seed) {}

void HostSampler::Accept(int32_t token) {
  if (!p_.penalized()) return;
  window_.push_back(token);
  counts_[token]++;
  if (static_cast<int32_t>(window_.size()) > p_.penaltyLastN) {
    auto it = counts_.find(window_.front());
    if (--it->second == 0) counts_.erase(it);
    window_.pop_front();
  }
}

int32_t HostSampler::Sample(const float* in) {
  logits_.assign(in, in + nVocab_);
  for (const LogitBias& b : p_.logitBias) logits_[b.token] += b.bias;
  // llama.cpp's penalties: repetition divides a positive logit (multiplies a negative one), then
  // frequency and presence subtract.
  for (const auto& [token, count] : counts_) {
    float& l = logits_[token];
    l = l <= 0 ? l * p_.repeatPenalty : l / p_.repeatPenalty;
    l -= static_cast<float>(count) * p_.frequencyPenalty + p_.presencePenalty;
  }
  if (p_.temperature <= 0)
    return static_cast<int32_t>(std::max_element(logits_.begin(), logits_.end()) - logits_.begin());

  candidates_.clear();
  for (int32_t t = 0; t < nVocab_; t++)
    if (logits_[t] != -std::numeric_limits<float>::infinity()) candidates_.emplace_back(logits_[t], t);
  if (candidates_.empty()) return static_cast<int32_t>(std::max_element(logits_.begin(), logits_.end()) - logits_.begin());
  auto higher = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  // Only top-k and top-p need the candidates in order (highest first, ties by token id, so the order
  // and so a seeded draw never depend on the sort); a full vocabulary is not sorted otherwise.
  if (p_.topK > 0 && static_cast<size_t>(p_.topK) < candidates_.size()) {
    std::partial_sort(candidates_.begin(), candidates_.begin() + p_.topK, candidates_.end(), higher);
    candidates_.resize(static_cast<size_t>(p_.topK));
  } else if (p_.topP < 1) {
    std::sort(candidates_.begin(), candidates_.end(), higher);
  }
  float top = candidates_.front().first;
  for (const auto& c : candidates_) top = std::max(top, c.first);
  if (p_.topP < 1) {
    // The smallest prefix whose probability (at temperature 1, as llama.cpp's top-p) reaches topP.
    double sum = 0;
    for (const auto& c : candidates_) sum += std::exp(static_cast<double>(c.first - top));
    double cumulative = 0;
    size_t n = 0;
    while (n < candidates_.size()) {
      cumulative += std::exp(static_cast<double>(candidates_[n].first - top)) / sum;
      n++;
      if (cumulative >= p_.topP) break;
    }
    candidates_.resize(std::max<size_t>(n, 1));
  }
  if (p_.minP > 0) {
    // p >= minP * p_max, i.e. logit >= top + log(minP); the top candidate always stays.
    const float floor = top + std::log(p_.minP);
    candidates_.erase(std::remove_if(candidates_.begin(), candidates_.end(),
                                     [&](const std::pair<float, int32_t>& c) { return c.first < floor; }),
                      candidates_.end());
  }
  // One draw: mt19937's raw output is the same on every platform (std's distributions are not).
  double total = 0;
  weights_.resize(candidates_.size());
  for (size_t i = 0; i < candidates_.size(); i++)
    total += weights_[i] = std::exp(static_cast<double>(candidates_[i].first - top) / p_.temperature);
  const double u = static_cast<double>(rng_()) / 4294967296.0 * total;
  double cumulative = 0;
  for (size_t i = 0; i < candidates_.size(); i++) {
    cumulative += weights_[i];
    if (u < cumulative) return candidates_[i].second;
  }
  return candidates_.back().second;
}

}  // namespace darkbloom
