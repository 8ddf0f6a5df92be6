// The requests of one scheduler, as the JS thread and the engine thread share them: the queue of
// submissions, the ids running on a row, the cancel requests, the busy rows and whether the scheduler
// is closing or failed. The rows themselves (llama.cpp's sequences, MLX's cache slots) stay with each
// backend's engine.
//
// It has no lock of its own: every method runs under its owner's lock (the llama Engine's own mutex;
// the MLX engine's, which all the schedulers of a model share).
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <unordered_set>
#include <vector>

#include "batch_types.h"

namespace darkbloom {

enum class CancelResult { Queued, Running, Unknown };

// What a scheduler's JS object asks of its core (the llama Engine, the MLX Scheduler), on the JS
// thread; each core answers through its RequestBook, under its lock.
class SchedulerCore {
 public:
  virtual ~SchedulerCore() = default;
  // Throws CodedError: busy (queue full), closed, engine_failed, bad_input (id in use).
  virtual void Submit(Submission&& submission) = 0;
  // RequestBook::Cancel says what each result means.
  virtual CancelResult Cancel(const std::string& id) = 0;
  virtual void RequestClose() = 0;
};

class RequestBook {
 public:
  RequestBook(int32_t rows, int32_t queueDepth) : rows_(rows), queueDepth_(queueDepth) {}

  // JS thread. Throws CodedError: engine_failed, closed, bad_input (id in use), busy (queue full).
  void Submit(Submission&& submission);
  // JS thread. A queued submission is removed at once (the caller reports it cancelled); a running
  // one is flagged and retired, with a "cancelled" done event, at the next step boundary.
  CancelResult Cancel(const std::string& id);
  void Close() { closing_ = true; }
  // Fills in what the book counts: busyRows and queued.
  void CountInto(BatchStats& stats) const;

  // Engine thread.
  bool HasWork() const { return closing_ || !queue_.empty() || busyRows_ > 0; }
  // At a step boundary: whether this step closes the scheduler (close requested, or JS gone). Flags
  // the busy rows to retire (every one when closing, else those cancelled since the last step), and
  // when closing drains the queue as "cancelled" done events. A Row has busy, id and cancelled.
  template <typename Row>
  bool BeginStep(bool jsGone, std::vector<Row>& rows, std::vector<Event>& events);
  // Admission: moves the oldest submission into `out`, now running on a row; false when none waits.
  bool Admit(Submission& out);
  // Retirement: the row that ran `id` is free again.
  void Retire(const std::string& id);
  // A fatal error: no more submissions are taken, and the queued ones fail with `message`.
  void Fail(const std::string& message, std::vector<Event>& events);
  // The engine is done with the scheduler (closed or failed): nothing runs any more.
  void Finish();

 private:
  int32_t rows_;
  int32_t queueDepth_;
  std::deque<Submission> queue_;
  std::unordered_set<std::string> running_;  // ids admitted to a row and not yet retired
  std::unordered_set<std::string> cancels_;  // running ids to retire at the next step boundary
  int32_t busyRows_ = 0;
  bool closing_ = false;
  bool failed_ = false;
};

template <typename Row>
bool RequestBook::BeginStep(bool jsGone, std::vector<Row>& rows, std::vector<Event>& events) {
  const bool closing = closing_ || jsGone;
  for (Row& r : rows)
    if (r.busy && (closing || cancels_.count(r.id) > 0)) r.cancelled = true;
  cancels_.clear();
  if (closing) {
    for (const Submission& s : queue_)
      events.push_back(Done(s.id, "cancelled", static_cast<int32_t>(s.prompt.size()), 0));
    queue_.clear();
  }
  return closing;
}

}  // namespace darkbloom
