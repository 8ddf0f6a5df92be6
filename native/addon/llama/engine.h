// The continuous-batching core: one engine thread owns a llama_context and runs every decode on it.
// No N-API here; scheduler.cc bridges it to JS.
#pragma once

#include <llama.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include "sampling.h"

namespace dbllama {

struct EngineOptions {
  int32_t rows = 1;
  int32_t contextPerRow = 0;
  int32_t prefillChunk = 512;
  int32_t queueDepth = 64;
};

struct Submission {
  std::string id;
  std::vector<llama_token> prompt;
  int32_t maxTokens = 0;
  SamplingParams sampling;
};

// What one step tells JS: tokens for a row, or its one terminal event (done or error).
struct Event {
  enum class Kind { Tokens, Done, Error } kind;
  std::string id;
  std::vector<llama_token> tokens;  // Tokens
  std::string reason;               // Done: stop | length | cancelled
  int32_t promptTokens = 0;         // Done
  int32_t generatedTokens = 0;      // Done
  std::string code, message;        // Error
};

struct EngineStats {
  int32_t busyRows = 0, queued = 0, rows = 0;
  int64_t kvCellsUsed = 0, kvCells = 0;
  int64_t promptTokensProcessed = 0, decodeSteps = 0, tokensGenerated = 0;
  double prefillSeconds = 0, decodeSeconds = 0;
};

class Engine {
 public:
  // Delivers one step's events; blocks while JS is behind (bounded queue). False: JS is gone.
  using Emit = std::function<bool(std::vector<Event>&&)>;

  // Takes ownership of ctx; it is freed by Run() on the engine thread when the loop ends.
  Engine(llama_model* model, llama_context* ctx, EngineOptions options, Emit emit);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // The engine thread's body: returns after close (or a fatal error), every request completed.
  void Run();

  // JS thread. Throws CodedError: busy (queue full), closed, engine_failed, bad_input (id in use).
  void Submit(Submission&& submission);
  enum class CancelResult { Queued, Running, Unknown };
  // JS thread. A queued submission is removed at once (the caller reports it cancelled); a running
  // one is flagged and retired, with a "cancelled" done event, at the next step boundary.
  CancelResult Cancel(const std::string& id);
  void RequestClose();
  EngineStats Stats();

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
  std::deque<Submission> queue_;
  std::unordered_set<std::string> running_;  // ids admitted to a row and not yet retired
  std::unordered_set<std::string> cancels_;  // running ids to retire at the next step boundary
  int32_t busyRows_ = 0;
  bool closing_ = false;
  bool failed_ = false;
  EngineStats stats_;
};

}  // namespace dbllama
