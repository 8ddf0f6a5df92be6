#include "logprobs.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

namespace darkbloom {
namespace {

// A candidate for the top n: its logit and token.
using Candidate = std::pair<float, int32_t>;

// Higher logit first; equal logits by token id, lowest first, so the list never depends on the order
// the vocabulary was visited in. log_softmax is monotonic, so this is also the logprobs' order.
bool Higher(const Candidate& a, const Candidate& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

}  // namespace

TokenLogprobs ComputeLogprobs(const float* logits, int32_t nVocab, int32_t token, int32_t n) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const size_t keep = static_cast<size_t>(std::clamp(n, 0, nVocab));
  // One pass finds the maximum and keeps the n highest in a heap whose front is the lowest kept: n is
  // at most 20, so most tokens cost one comparison, where sorting a 150k-token vocabulary would cost
  // far more on every token of every row that asked.
  std::vector<Candidate> top;
  top.reserve(keep);
  float max = kNegInf;
  for (int32_t t = 0; t < nVocab; t++) {
    const float l = logits[t];
    if (l > max) max = l;
    if (keep == 0) continue;
    if (top.size() < keep) {
      top.emplace_back(l, t);
      std::push_heap(top.begin(), top.end(), Higher);
    } else if (Higher({l, t}, top.front())) {
      std::pop_heap(top.begin(), top.end(), Higher);
      top.back() = {l, t};
      std::push_heap(top.begin(), top.end(), Higher);
    }
  }
  std::sort_heap(top.begin(), top.end(), Higher);

  // Summed in double: a float sum over a large vocabulary loses the small probabilities' mass.
  // Each term in float (exp of a float is several times cheaper than of a double, and this pass over
  // the whole vocabulary is the cost of a token's logprobs; its relative error, ~1e-7, is below what
  // the binary32 figures carry). Subtracting the maximum first keeps every exp() at most 1, so
  // nothing overflows whatever the logits' scale.
  double sum = 0;
  const double m = max;
  for (int32_t t = 0; t < nVocab; t++) sum += static_cast<double>(std::exp(logits[t] - max));
  const double logSum = std::log(sum);
  // No finite logit at all (every one -inf): no token has any probability; -inf says so, where the
  // formula would give NaN (-inf minus -inf), which JS consumers could not tell from a bug.
  auto logprob = [&](float l) {
    return max == kNegInf ? kNegInf : static_cast<float>((static_cast<double>(l) - m) - logSum);
  };

  TokenLogprobs out;
  out.logprob = logprob(logits[token]);
  out.topTokens.reserve(top.size());
  out.topLogprobs.reserve(top.size());
  for (const Candidate& c : top) {
    out.topTokens.push_back(c.second);
    out.topLogprobs.push_back(logprob(c.first));
  }
  return out;
}

}  // namespace darkbloom
