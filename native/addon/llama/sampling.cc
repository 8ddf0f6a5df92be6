#include "sampling.h"

#include <vector>

namespace dbllama {

llama_sampler* BuildSamplerChain(const SamplingParams& p, int32_t nVocab) {
  llama_sampler_chain_params cp = llama_sampler_chain_default_params();
  cp.no_perf = true;
  llama_sampler* chain = llama_sampler_chain_init(cp);
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
