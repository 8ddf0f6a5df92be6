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
  // Bans first: a bias can never bring back a token they forbid.
  if (!p.grammar.empty()) {
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

llama_sampler* BuildGrammar(const SamplingParams& p, const llama_vocab* vocab) {
  return p.grammar.empty() ? nullptr : llama_sampler_init_grammar(vocab, p.grammar.c_str(), "root");
}

namespace {

llama_token Pick(llama_sampler* first, llama_sampler* chain, const float* logits, std::vector<llama_token_data>& cur) {
  for (size_t t = 0; t < cur.size(); t++) cur[t] = {static_cast<llama_token>(t), logits[t], 0.0f};
  llama_token_data_array all{cur.data(), cur.size(), -1, false};
  if (first != nullptr) llama_sampler_apply(first, &all);
  llama_sampler_apply(chain, &all);
  if (all.selected < 0 || all.selected >= static_cast<int64_t>(all.size)) return LLAMA_TOKEN_NULL;
  return all.data[all.selected].id;
}

}  // namespace

int32_t SampleToken(llama_sampler* chain, llama_sampler* grammar, llama_context* ctx, int32_t idx,
                    std::vector<llama_token_data>& scratch) {
  if (grammar == nullptr) return llama_sampler_sample(chain, ctx, idx);
  const float* logits = llama_get_logits_ith(ctx, idx);
  scratch.resize(static_cast<size_t>(llama_vocab_n_tokens(llama_model_get_vocab(llama_get_model(ctx)))));
  llama_token token = Pick(nullptr, chain, logits, scratch);
  llama_token_data one{token, 1.0f, 0.0f};
  llama_token_data_array single{&one, 1, -1, false};
  if (token != LLAMA_TOKEN_NULL) llama_sampler_apply(grammar, &single);
  if (token == LLAMA_TOKEN_NULL || std::isinf(one.logit)) token = Pick(grammar, chain, logits, scratch);
  // Nothing the grammar allows survived the chain (its end allows end-of-generation, which no ban
  // touches, so this is a grammar with no way on): the row ends rather than sample outside it.
  if (token == LLAMA_TOKEN_NULL) return llama_vocab_eos(llama_model_get_vocab(llama_get_model(ctx)));
  llama_sampler_accept(grammar, token);
  llama_sampler_accept(chain, token);
  return token;
}

}  // namespace dbllama
