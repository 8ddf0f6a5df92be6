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

#include "common.h"
#include "sampling.h"

namespace dbllama {

struct EngineOptions {
  int32_t rows = 1;
  int32_t contextPerRow = 0;
  int32_t prefillChunk = 512;
  int32_t queueDepth = 64;
};

// Submissions and events carry tokens as int32_t (../common/batch_types.h).
static_assert(std::is_same<llama_token, int32_t>::value, "llama_token is int32_t");

class Engine : public SchedulerCore {
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

  // JS thread (SchedulerCore).
  void Submit(Submission&& submission) override;
  CancelResult Cancel(const std::string& id) override;
  void RequestClose() override;
  BatchStats Stats();

 private:
  struct Row {
    int32_t seq = 0;
    bool busy = false;
    std::string id;
    std::vector<llama_token> prompt;
    int32_t maxTokens = 0;
    int32_t prefilled = 0;  // prompt tokens in the KV cache
    int32_t nPast = 0;      // cells this row's sequence holds
    int32_t generated = 0;
    llama_token last = 0;   // sampled, not yet decoded
    bool decoding = false;  // the prompt is in; the row takes part in decode steps
    bool finished = false;  // its terminal event was emitted
    bool cancelled = false;
    uint64_t admitted = 0;  // admission order: the oldest prefilling row goes first
    llama_sampler* chain = nullptr;
  };

  void Loop();
  void Retire(std::vector<Event>& events);
  void Admit();
  void DecodeStep(std::vector<Event>& events);
  void PrefillStep(std::vector<Event>& events);
  bool Accept(Row& row, llama_token token, std::vector<Event>& events);
  void Finish(Row& row, const char* reason, std::vector<Event>& events);
  void Fail(Row& row, const std::string& message, std::vector<Event>& events);
  void FailAll(const std::string& message);
  void Publish(std::vector<Event>& events);
  void UpdateStats(double prefillSeconds, double decodeSeconds, int64_t promptTokens, int64_t generated,
                   bool decodeStep);

  llama_model* model_;
  const llama_vocab* vocab_;
  llama_context* ctx_;
  llama_batch batch_;
  int32_t nVocab_;
  EngineOptions options_;
  Emit emit_;
  std::vector<Row> rows_;  // engine thread only
  uint64_t admissions_ = 0;
  bool jsGone_ = false;

  // Shared with the JS thread, under mu_.
  std::mutex mu_;
  std::condition_variable cv_;
  RequestBook book_;
  BatchStats stats_;
};

}  // namespace dbllama
