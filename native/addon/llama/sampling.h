// Per-row sampling: one llama_sampler chain per row, built from the shared SamplingParams
// (../common/sampling_params.h parses the JS options).
#pragma once

#include <llama.h>

#include <cstdint>
#include <vector>

#include "../common/sampling_params.h"

namespace dbllama {

using ::darkbloom::ParseSampling;
using ::darkbloom::SamplingParams;

static_assert(SamplingParams::kRandomSeed == LLAMA_DEFAULT_SEED, "an absent seed is llama.cpp's random seed");

// A fresh chain owning its own RNG: a row's draws never depend on the other rows, so a seed
// reproduces its tokens in any batch. Under a grammar, `characterFragments` (PartialCharacterTokens)
// are banned in it; the grammar itself is the row's other sampler (BuildGrammar).
llama_sampler* BuildSamplerChain(const SamplingParams& params, const llama_vocab* vocab,
                                 const std::vector<llama_logit_bias>& characterFragments);

// The row's grammar sampler (already checked to parse), or nullptr without one.
llama_sampler* BuildGrammar(const SamplingParams& params, const llama_vocab* vocab);

// Samples row `idx` of the context's last logits and accepts the token into the chain (and the
// grammar). With a grammar, as llama.cpp's common sampler does: the chain picks from the full
// distribution, the grammar checks that one token, and only when it refuses is the grammar applied to
// the whole vocabulary and the pick made again. Checking a token costs one grammar step; applying
// the grammar to a 150k-token vocabulary costs that many, on every step it is done.
int32_t SampleToken(llama_sampler* chain, llama_sampler* grammar, llama_context* ctx, int32_t idx,
                    std::vector<llama_token_data>& scratch);

// Bans (-inf biases) for every token whose text alone is not valid UTF-8: the fragments of a character
// a byte-level vocabulary splits across tokens. llama.cpp's grammar decodes token text leniently (it
// never checks continuation bytes, and reads a stray continuation byte 0xA2 as '"'), so a fragment
// could pass the grammar as a character, or as a JSON quote, that strict UTF-8 decoding (what the
// consumer's text is) turns into U+FFFD: output the grammar accepted would then not be what it
// allows. Without fragments every character is whole, and any character can still be written as a
// JSON \u escape. Costs one pass over the vocabulary, done once per model.
std::vector<llama_logit_bias> PartialCharacterTokens(const llama_vocab* vocab);

}  // namespace dbllama
