// The step loop both batching cores run (the llama Engine, the MLX Scheduler): rows join and leave at
// step boundaries; each step retires finished and cancelled rows, admits queued submissions to free
// rows, runs one decode step of every decoding row and one prefill chunk of the oldest prefilling
// row, and hands each stage's events to the outbox once the rows they speak of are retired (JS gets
// them at once, or with the next ones when steps are faster than the delivery interval: outbox.h).
// What a decode step or a prefill chunk computes, and what a row holds besides this bookkeeping (a
// llama sequence and sampler chain; an MLX cache slot and host sampler), is each backend's own.
//
// CRTP: the backend derives from BatchCore<Backend, Row, Stats> (Row derives from RowState) and
// provides, on the engine thread:
//   void DecodeStep(std::vector<Event>&);  void PrefillStep(std::vector<Event>&);
//   void StartRow(Row&, const SamplingParams&);  // its sampler, at admission
//   void ReleaseRow(Row&);                       // its handles, before the row is cleared
//   void Sampled(Row&, int32_t token);           // a sampled token, before it is judged
//   bool IsEndOfGeneration(int32_t token) const;
//   int32_t VocabSize() const;                   // logits per row (a token's logprobs read them all)
//   int64_t CellsHeld(const Row&) const;         // KV cells the row holds (stats)
//   bool Deliver(std::vector<Event>&&);          // events to JS (blocks while JS is behind); false: JS is gone
//   void Wake();                                 // new work for the engine thread (JS thread)
//   void CheckSampling(const SamplingParams&);   // throws CodedError bad_input for what it cannot
//                                                // do as asked (a grammar), at submit (JS thread)
// The lock is the backend's (the llama Engine's own; the MLX engine's, which the schedulers of a
// model share): every RequestBook call and the stats run under it.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "batch_types.h"
#include "logprobs.h"
#include "outbox.h"
#include "request_book.h"

namespace darkbloom {

// The bookkeeping of a row, shared by the backends' rows.
struct RowState {
  bool busy = false;
  std::string id;
  std::vector<int32_t> prompt;
  int32_t maxTokens = 0;
  int32_t prefilled = 0;  // prompt tokens prefilled so far
  int32_t nPast = 0;      // positions the row holds in the cache it decodes from
  int32_t generated = 0;
  int32_t last = 0;       // sampled, not yet decoded
  bool finished = false;  // its terminal event was emitted
  bool cancelled = false;
  uint64_t admitted = 0;  // admission order: the oldest prefilling row goes first
  int32_t logprobs = -1;  // the request's SamplingParams::logprobs: -1 none, else the alternatives per token
};

inline double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

template <typename Backend, typename Row, typename Stats = BatchStats>
class BatchCore : public SchedulerCore {
 public:
  // JS thread (SchedulerCore).
  void Submit(Submission&& s) override {
    // Before the book takes it: a request the backend cannot serve as asked is refused at submit.
    backend().CheckSampling(s.sampling);
    {
      std::lock_guard<std::mutex> lk(mu_);
      book_.Submit(std::move(s));
    }
    backend().Wake();
  }

  CancelResult Cancel(const std::string& id) override {
    CancelResult result;
    {
      std::lock_guard<std::mutex> lk(mu_);
      result = book_.Cancel(id);
    }
    if (result == CancelResult::Running) backend().Wake();
    return result;
  }

  void RequestClose() override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      book_.Close();
    }
    backend().Wake();
  }

  // Engine thread, under the lock: whether a step has anything to do; a close asked by the engine.
  bool HasWorkLocked() const { return book_.HasWork(); }
  void CloseLocked() { book_.Close(); }

  Stats CurrentStats() {
    std::lock_guard<std::mutex> lk(mu_);
    Stats s = stats_;
    book_.CountInto(s);
    return s;
  }

 protected:
  // deliveryIntervalUs: the least time between two deliveries of held events (outbox.h); 0 delivers
  // every stage's events as they come.
  BatchCore(std::mutex& mu, int32_t rows, int32_t queueDepth, int32_t deliveryIntervalUs)
      : rows_(rows), mu_(mu), book_(rows, queueDepth), outbox_(std::chrono::microseconds(deliveryIntervalUs)) {
    stats_.rows = rows;
  }

  // Engine thread, under the lock: a step begins. Whether it closes the scheduler (close requested,
  // or JS gone); the rows to retire are flagged and, when closing, the queue drained into `events`.
  bool BeginStepLocked(std::vector<Event>& events) { return book_.BeginStep(jsGone_, rows_, events); }

  // Engine thread: the rest of the step BeginStepLocked began.
  void StepBody(bool closing, std::vector<Event>& events) {
    // Retiring first frees the rows of finished and cancelled requests before anything is admitted.
    Retire(events);
    if (closing) {
      Publish(events);
      return;
    }
    Admit();
    Publish(events);
    // Rows that finished in a step are retired before JS hears of it: once a done event arrives, the
    // row and its cache positions are free (stats say so, and the next submission has the row).
    backend().DecodeStep(events);
    Retire(events);
    Publish(events);
    backend().PrefillStep(events);
    Retire(events);
    Publish(events);
  }

  // A sampled token: the end of generation finishes the row (that token is not delivered), any other
  // is delivered and finishes it at maxTokens. Whether a token was generated. rawLogits are the row's
  // logits of this step as the model computed them (nothing the sampler did to its own copy): when the
  // request asked for logprobs, the delivered token carries theirs (logprobs.h says why raw).
  bool Accept(Row& row, int32_t token, std::vector<Event>& events, const float* rawLogits) {
    backend().Sampled(row, token);
    if (backend().IsEndOfGeneration(token)) {
      Finish(row, "stop", events);
      return false;
    }
    row.generated++;
    events.push_back(TokenEvent(row.id, token));
    if (row.generated == 1) firstToken_ = true;
    if (row.logprobs >= 0)
      events.back().logprobs.push_back(ComputeLogprobs(rawLogits, backend().VocabSize(), token, row.logprobs));
    if (row.generated >= row.maxTokens)
      Finish(row, "length", events);
    else
      row.last = token;
    return true;
  }

  void Fail(Row& row, const std::string& message, std::vector<Event>& events) {
    row.finished = true;
    events.push_back(EngineFailed(row.id, message));
  }

  // A fatal error: every running and queued request fails with `message`; no more are taken.
  void FailAll(const std::string& message) {
    std::vector<Event> events;
    for (Row& r : rows_)
      if (r.busy && !r.finished) Fail(r, message, events);
    {
      std::lock_guard<std::mutex> lk(mu_);
      book_.Fail(message, events);
    }
    try {
      Publish(events);
    } catch (...) {
      // nothing more can be told to JS
    }
  }

  // The loop is over (closed or failed): nothing runs any more.
  void FinishBook() {
    std::lock_guard<std::mutex> lk(mu_);
    book_.Finish();
    stats_.kvCellsUsed = 0;
  }

  // One step's work into the stats, with the KV cells the busy rows hold now.
  void UpdateStats(double prefillSeconds, double decodeSeconds, int64_t promptTokens, int64_t generated,
                   bool decodeStep) {
    int64_t used = 0;
    for (const Row& r : rows_)
      if (r.busy) used += backend().CellsHeld(r);
    std::lock_guard<std::mutex> lk(mu_);
    stats_.kvCellsUsed = used;
    stats_.Add(prefillSeconds, decodeSeconds, promptTokens, generated, decodeStep);
  }

  // The stats, for the backend to set what only it knows (the KV cells, the bytes its caches hold):
  // under the lock, or in its constructor, before any other thread has the core.
  Stats& StatsLocked() { return stats_; }

  std::vector<Row> rows_;  // engine thread only

 private:
  Backend& backend() { return static_cast<Backend&>(*this); }

  void Retire(std::vector<Event>& events) {
    bool retired = false;
    for (Row& r : rows_) {
      if (!r.busy || !(r.finished || r.cancelled)) continue;
      if (!r.finished) events.push_back(Done(r.id, "cancelled", static_cast<int32_t>(r.prompt.size()), r.generated));
      backend().ReleaseRow(r);
      std::string id = std::move(r.id);
      r = Row{};
      retired = true;
      std::lock_guard<std::mutex> lk(mu_);
      book_.Retire(id);
    }
    if (retired) UpdateStats(0, 0, 0, 0, false);
  }

  void Admit() {
    for (Row& r : rows_) {
      if (r.busy) continue;
      Submission s;
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (!book_.Admit(s)) return;
      }
      r.busy = true;
      r.id = std::move(s.id);
      r.prompt = std::move(s.prompt);
      r.maxTokens = s.maxTokens;
      r.admitted = ++admissions_;
      r.logprobs = s.sampling.logprobs;
      // Penalties look back over the generated tokens only (each sampled token is accepted): OpenAI
      // defines presence and frequency penalties on what was sampled so far, and vLLM and the llama
      // engine (node-llama-cpp) count them that way; llama-server's counting of the prompt too would
      // make the same request sample differently on the two engines.
      backend().StartRow(r, s.sampling);
    }
  }

  void Finish(Row& row, const char* reason, std::vector<Event>& events) {
    row.finished = true;
    events.push_back(Done(row.id, reason, static_cast<int32_t>(row.prompt.size()), row.generated));
  }

  // Nothing stays held for long: held tokens belong to rows that have not ended, so the engine steps
  // again (the book has work while a row is busy) and the next Publish delivers them when due.
  void Publish(std::vector<Event>& events) {
    outbox_.Add(events, firstToken_);
    firstToken_ = false;
    if (!outbox_.Due()) return;
    std::vector<Event> out = outbox_.Take();
    if (!jsGone_ && !backend().Deliver(std::move(out))) jsGone_ = true;
  }

  std::mutex& mu_;
  uint64_t admissions_ = 0;
  bool jsGone_ = false;
  bool firstToken_ = false;  // the events being published hold a row's first token
  // Shared with the JS thread, under mu_.
  RequestBook book_;
  Stats stats_;
  Outbox outbox_;  // engine thread
};

}  // namespace darkbloom
