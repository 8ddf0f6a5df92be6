// The continuous-batching core: one engine thread owns a llama_context and runs every decode on it.
// No N-API here; scheduler.cc bridges it to JS.
#pragma once

#include <llama.h>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "../common/batch_core.h"
#include "common.h"
#include "sampling.h"

namespace dbllama {

struct EngineOptions {
  int32_t rows = 1;
  int32_t contextPerRow = 0;
  int32_t prefillChunk = 512;
  int32_t queueDepth = 64;
  int32_t deliveryIntervalUs = darkbloom::kDefaultDeliveryIntervalUs;  // ../common/outbox.h
};

// Submissions and events carry tokens as int32_t (../common/batch_types.h).
static_assert(std::is_same<llama_token, int32_t>::value, "llama_token is int32_t");

// A row: the shared bookkeeping, whether its prompt is in, and its sampler chain. Row i is llama.cpp
// sequence i (its own KV stream).
struct EngineRow : RowState {
  bool decoding = false;  // the prompt is in; the row takes part in decode steps
  llama_sampler* chain = nullptr;
  llama_sampler* grammar = nullptr;  // the request's grammar, or none
};

class Engine : public BatchCore<Engine, EngineRow> {
 public:
  // Delivers one step's events; blocks while JS is behind (bounded queue). False: JS is gone.
  using Emit = std::function<bool(std::vector<Event>&&)>;

  // Takes ownership of ctx; it is freed by Run() on the engine thread when the loop ends.
  Engine(llama_model* model, llama_context* ctx, EngineOptions options, Emit emit);
  ~Engine() override;
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // The engine thread's body: returns after close (or a fatal error), every request completed.
  void Run();

 private:
  using Row = EngineRow;
  friend class BatchCore<Engine, EngineRow>;

  void Loop();
  // BatchCore's hooks.
  void DecodeStep(std::vector<Event>& events);
  void PrefillStep(std::vector<Event>& events);
  void StartRow(Row& row, const SamplingParams& sampling);
  void ReleaseRow(Row& row);
  void Sampled(Row&, int32_t) {}  // SampleToken accepts the token into the row's samplers
  bool IsEndOfGeneration(int32_t token) const { return llama_vocab_is_eog(vocab_, token); }
  int32_t VocabSize() const { return nVocab_; }
  int64_t CellsHeld(const Row& row) const { return row.nPast; }
  bool Deliver(std::vector<Event>&& events) { return emit_(std::move(events)); }
  void Wake() { cv_.notify_one(); }
  // A grammar llama.cpp cannot parse is refused at submit, not discovered when the row starts.
  void CheckSampling(const SamplingParams& sampling) const;

  llama_seq_id Seq(const Row& row) const { return static_cast<llama_seq_id>(&row - rows_.data()); }

  // Engine thread: the vocabulary's character fragments (sampling.h), computed on the first grammar.
  std::vector<llama_logit_bias> fragments_;
  bool fragmentsKnown_ = false;
  std::vector<llama_token_data> candidates_;  // SampleToken's scratch, engine thread

  llama_model* model_;
  const llama_vocab* vocab_;
  llama_context* ctx_;
  llama_batch batch_;
  int32_t nVocab_;
  EngineOptions options_;
  Emit emit_;
  std::mutex mu_;  // BatchCore's lock
  std::condition_variable cv_;
};

}  // namespace dbllama
