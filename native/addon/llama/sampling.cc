#include "sampling.h"

#include <cmath>
#include <vector>

namespace dbllama {

namespace {

// Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF.
bool ValidUtf8(const unsigned char* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned char c = s[i];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80) len = 1;
    else if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) { len = 3; lo = 0xA0; }
    else if (c >= 0xE1 && c <= 0xEC) len = 3;
    else if (c == 0xED) { len = 3; hi = 0x9F; }
    else if (c >= 0xEE && c <= 0xEF) len = 3;
    else if (c == 0xF0) { len = 4; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) { len = 4; hi = 0x8F; }
    else return false;
    if (i + len > n) return false;
    for (size_t k = 1; k < len; k++) {
      unsigned char b = s[i + k];
      if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) return false;
    }
    i += len;
  }
  return true;
}

}  // namespace

std::vector<llama_logit_bias> PartialCharacterTokens(const llama_vocab* vocab) {
  std::vector<llama_logit_bias> bans;
  std::vector<char> piece(256);
  const int32_t n = llama_vocab_n_tokens(vocab);
  for (int32_t t = 0; t < n; t++) {
    int32_t len = llama_token_to_piece(vocab, t, piece.data(), static_cast<int32_t>(piece.size()), 0, false);
    if (len < 0) {
      piece.resize(static_cast<size_t>(-len));
      len = llama_token_to_piece(vocab, t, piece.data(), static_cast<int32_t>(piece.size()), 0, false);
    }
    if (len > 0 && !ValidUtf8(reinterpret_cast<const unsigned char*>(piece.data()), static_cast<size_t>(len)))
      bans.push_back({t, -INFINITY});
  }
  return bans;
}

llama_sampler* BuildSamplerChain(const SamplingParams& p, const llama_vocab* vocab,
                                 const std::vector<llama_logit_bias>& characterFragments) {
  const int32_t nVocab = llama_vocab_n_tokens(vocab);
  llama_sampler_chain_params cp = llama_sampler_chain_default_params();
  cp.no_perf = true;
  llama_sampler* chain = llama_sampler_chain_init(cp);
  // The grammar first: biases and penalties then only reorder what it allows, and a bias can never
  // bring back a token it forbids.
  if (!p.grammar.empty()) {
    llama_sampler_chain_add(chain, llama_sampler_init_grammar(vocab, p.grammar.c_str(), "root"));
    if (!characterFragments.empty())
      llama_sampler_chain_add(chain, llama_sampler_init_logit_bias(nVocab, static_cast<int32_t>(characterFragments.size()),
                                                                   characterFragments.data()));
  }
  // llama.cpp's usual order: biases and penalties change logits, the filters cut the candidates,
  // temperature scales what is left, and one draw (or argmax) picks.
  if (!p.logitBias.empty()) {
    std::vector<llama_logit_bias> bias;
    bias.reserve(p.logitBias.size());
    for (const darkbloom::LogitBias& b : p.logitBias) bias.push_back({b.token, b.bias});
    llama_sampler_chain_add(chain,
                            llama_sampler_init_logit_bias(nVocab, static_cast<int32_t>(bias.size()), bias.data()));
  }
  if (p.penalized())
    llama_sampler_chain_add(chain, llama_sampler_init_penalties(nVocab, p.penaltyLastN, p.repeatPenalty, p.frequencyPenalty,
                                                                p.presencePenalty));
  if (p.temperature <= 0) {
    llama_sampler_chain_add(chain, llama_sampler_init_greedy());
    return chain;
  }
  if (p.topK > 0) llama_sampler_chain_add(chain, llama_sampler_init_top_k(p.topK));
  if (p.topP < 1) llama_sampler_chain_add(chain, llama_sampler_init_top_p(p.topP, 1));
  if (p.minP > 0) llama_sampler_chain_add(chain, llama_sampler_init_min_p(p.minP, 1));
  llama_sampler_chain_add(chain, llama_sampler_init_temp(p.temperature));
  llama_sampler_chain_add(chain, llama_sampler_init_dist(p.seed));
  return chain;
}

}  // namespace dbllama
