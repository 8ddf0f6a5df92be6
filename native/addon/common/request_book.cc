#include "request_book.h"

#include <algorithm>

namespace darkbloom {

void RequestBook::Submit(Submission&& s) {
  if (failed_) throw CodedError(code::kEngineFailed, "the scheduler failed and no longer accepts requests");
  if (closing_) throw CodedError(code::kClosed, "the scheduler is closed");
  bool known = running_.count(s.id) > 0 ||
               std::any_of(queue_.begin(), queue_.end(), [&](const Submission& q) { return q.id == s.id; });
  if (known) throw CodedError(code::kBadInput, "a request with id " + s.id + " is already submitted");
  // Free rows take submissions at the next step, so they do not count against the queue depth.
  size_t freeRows = static_cast<size_t>(rows_ - busyRows_);
  if (queue_.size() + 1 > static_cast<size_t>(queueDepth_) + freeRows)
    throw CodedError(code::kBusy,
                     "the scheduler's queue is full (" + std::to_string(queueDepth_) + " waiting requests)");
  queue_.push_back(std::move(s));
}

CancelResult RequestBook::Cancel(const std::string& id) {
  auto it = std::find_if(queue_.begin(), queue_.end(), [&](const Submission& q) { return q.id == id; });
  if (it != queue_.end()) {
    queue_.erase(it);
    return CancelResult::Queued;
  }
  if (running_.count(id) == 0) return CancelResult::Unknown;
  cancels_.insert(id);
  return CancelResult::Running;
}

void RequestBook::CountInto(BatchStats& stats) const {
  stats.busyRows = busyRows_;
  stats.queued = static_cast<int32_t>(queue_.size());
}

bool RequestBook::Admit(Submission& out) {
  if (queue_.empty()) return false;
  out = std::move(queue_.front());
  queue_.pop_front();
  running_.insert(out.id);
  busyRows_++;
  return true;
}

void RequestBook::Retire(const std::string& id) {
  running_.erase(id);
  busyRows_--;
}

void RequestBook::Fail(const std::string& message, std::vector<Event>& events) {
  failed_ = true;
  for (const Submission& s : queue_) events.push_back(EngineFailed(s.id, message));
  queue_.clear();
}

void RequestBook::Finish() {
  closing_ = true;
  busyRows_ = 0;
  running_.clear();
}

}  // namespace darkbloom
