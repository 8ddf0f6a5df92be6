// Shared by the addons' batching cores (llama, mlx): what goes into a scheduler, what comes out of its
// steps, and what its stats say. Nothing here calls N-API (scheduler_js.h turns them into JS values).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "errors.h"
#include "logprobs.h"
#include "sampling_params.h"

namespace darkbloom {

struct Submission {
  std::string id;
  std::vector<int32_t> prompt;
  int32_t maxTokens = 0;
  SamplingParams sampling;
};

// What one step tells JS: tokens for a row, or its one terminal event (done or error).
struct Event {
  enum class Kind { Tokens, Done, Error } kind;
  std::string id;
  std::vector<int32_t> tokens;  // Tokens
  std::string reason;           // Done: stop | length | cancelled
  int32_t promptTokens = 0;     // Done
  int32_t generatedTokens = 0;  // Done
  std::string code, message;    // Error
  // Tokens, when the request asked for logprobs: one entry per token, aligned with `tokens`; else empty.
  std::vector<TokenLogprobs> logprobs;
};

inline Event TokenEvent(const std::string& id, int32_t token) {
  return Event{Event::Kind::Tokens, id, {token}, {}, 0, 0, {}, {}};
}

inline Event Done(const std::string& id, const char* reason, int32_t promptTokens, int32_t generated) {
  return Event{Event::Kind::Done, id, {}, reason, promptTokens, generated, {}, {}};
}

// The request fails with the engine: its terminal event, engine_failed.
inline Event EngineFailed(const std::string& id, const std::string& message) {
  return Event{Event::Kind::Error, id, {}, {}, 0, 0, code::kEngineFailed, message};
}

// What every backend reports; a backend that knows more extends it (the MLX scheduler's kvBytes).
struct BatchStats {
  int32_t busyRows = 0, queued = 0, rows = 0;
  int64_t kvCellsUsed = 0, kvCells = 0;
  int64_t promptTokensProcessed = 0, decodeSteps = 0, tokensGenerated = 0;
  double prefillSeconds = 0, decodeSeconds = 0;

  // One step's work (a decode step, a prefill chunk, or neither: a retirement).
  void Add(double prefill, double decode, int64_t promptTokens, int64_t generated, bool decodeStep) {
    prefillSeconds += prefill;
    decodeSeconds += decode;
    promptTokensProcessed += promptTokens;
    tokensGenerated += generated;
    if (decodeStep) decodeSteps++;
  }
};

}  // namespace darkbloom
