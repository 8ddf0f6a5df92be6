// The MLX batching core: one engine thread per loaded model runs all of its MLX work (loading, every
// scheduler's steps, diagnostics), since MLX evaluates on the thread that owns its stream. Each
// scheduler has its own rows, queue and caches; the thread steps them in turn. No N-API here;
// addon.cc bridges it to JS.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "../common/batch_core.h"
#include "../common/batch_types.h"
#include "../common/errors.h"
#include "../common/host_sampler.h"
#include "../common/request_book.h"
#include "../common/sampling_params.h"
#include "transformer.h"

namespace dbmlx {

// The addon is built on the batching cores' shared pieces: their names are used unqualified.
using namespace ::darkbloom;

struct SchedulerOptions {
  int32_t rows = 1;
  int32_t contextPerRow = 0;  // --max-context: prompt + maxTokens of a request must fit
  int32_t prefillChunk = 512;
  int32_t queueDepth = 64;
  int32_t deliveryIntervalUs = darkbloom::kDefaultDeliveryIntervalUs;  // ../common/outbox.h
  int32_t kvBits = 0;  // 0: the compute dtype; 4 or 8: quantized as mlx-lm's QuantizedKVCache
};

// An MLX scheduler's stats add the bytes its caches (batched and staging) preallocate.
struct SchedulerStats : BatchStats {
  int64_t kvBytes = 0;
};

class Engine;
class Scheduler;

// A row: the shared bookkeeping, its slot in the batched cache while it decodes, and its sampler.
struct SchedulerRow : RowState {
  int32_t slot = -1;
  std::unique_ptr<HostSampler> sampler;
};

class Scheduler : public BatchCore<Scheduler, SchedulerRow, SchedulerStats> {
 public:
  // Delivers one step's events; blocks while JS is behind (bounded queue). False: JS is gone.
  using Emit = std::function<bool(std::vector<Event>&&)>;

  // Engine thread: preallocates the caches (throws bad_input / engine_failed).
  Scheduler(Engine* engine, const Transformer& model, SchedulerOptions options);
  ~Scheduler() override;
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // JS thread, once, before the engine steps it. onFinished runs on the engine thread after the
  // scheduler's last event (closed or failed); the engine never touches it again.
  void Bind(Emit emit, std::function<void()> onFinished);
  const SchedulerOptions& options() const { return options_; }

  // Engine thread: one step (retire, admit, a decode step of every decoding row, one prefill chunk).
  // False once the scheduler is finished (closed or failed): the engine drops it.
  bool Step();
  void Finished();

 private:
  using Row = SchedulerRow;
  friend class BatchCore<Scheduler, SchedulerRow, SchedulerStats>;

  // BatchCore's hooks.
  void DecodeStep(std::vector<Event>& events);
  void PrefillStep(std::vector<Event>& events);
  void StartRow(Row& row, const SamplingParams& sampling);
  void ReleaseRow(Row& row);
  void Sampled(Row& row, int32_t token) { row.sampler->Accept(token); }
  bool IsEndOfGeneration(int32_t token) const { return eos_.count(token) > 0; }
  int32_t VocabSize() const { return nVocab_; }
  int64_t CellsHeld(const Row& row) const { return row.slot >= 0 ? row.nPast : row.prefilled; }
  bool Deliver(std::vector<Event>&& events);
  void Wake();
  // The host sampler has no grammar matcher: a grammar is refused, never decoded without.
  static void CheckSampling(const SamplingParams& sampling) {
    if (!sampling.grammar.empty())
      throw CodedError(code::kBadInput, "the MLX backend cannot constrain output to a grammar");
  }

  void Join(Row& row);

  Engine* engine_;
  const Transformer& model_;
  SchedulerOptions options_;
  Emit emit_;
  std::function<void()> onFinished_;
  std::unordered_set<int32_t> eos_;
  int32_t nVocab_;

  // Engine thread only. The batched cache holds the decoding rows in slots [0, slots_.size()), each
  // row's positions left-padded to end at idx_; the staging cache holds the one row being prefilled
  // (chunks of the oldest prefilling row, from its start), copied into the next slot when it is in.
  std::vector<Row*> slots_;
  Row* staged_ = nullptr;
  int32_t idx_ = 0;
  std::unique_ptr<KvCache> cache_, staging_;
};

class Engine {
 public:
  Engine();
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Runs `job` on the engine thread, in order. Throws closed once the engine is stopping.
  void Post(std::function<void()> job);
  // JS thread: the engine steps it from now on, until it finishes.
  void Attach(std::shared_ptr<Scheduler> scheduler);
  // Any thread: a scheduler has new work.
  void Wake();
  // JS thread: closes every attached scheduler, runs the jobs already posted, frees the model on the
  // engine thread and joins it. Idempotent.
  void Stop();

  std::mutex& mu() { return mu_; }

  // Engine thread only.
  void SetModel(std::unique_ptr<Transformer> model) { model_ = std::move(model); }
  const Transformer* model() const { return model_.get(); }

 private:
  void Loop();

  std::unique_ptr<Transformer> model_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::shared_ptr<Scheduler>> schedulers_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace dbmlx
