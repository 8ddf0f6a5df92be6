// Per-row sampling: one llama_sampler chain per row, built from the shared SamplingParams
// (../common/sampling_params.h parses the JS options).
#pragma once

#include <llama.h>

#include <cstdint>

#include "../common/sampling_params.h"

namespace dbllama {

using ::darkbloom::ParseSampling;
using ::darkbloom::SamplingParams;

static_assert(SamplingParams::kRandomSeed == LLAMA_DEFAULT_SEED, "an absent seed is llama.cpp's random seed");

// A fresh chain owning its own RNG: a row's draws never depend on the other rows, so a seed
// reproduces its tokens in any batch.
llama_sampler* BuildSamplerChain(const SamplingParams& params, int32_t nVocab);

}  // namespace dbllama
