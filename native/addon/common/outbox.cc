#include "outbox.h"

#include <utility>

namespace darkbloom {

void Outbox::Add(std::vector<Event>& events, bool urgent) {
  urgent_ = urgent_ || urgent;
  for (Event& e : events) {
    if (e.kind != Event::Kind::Tokens) {
      // A row's last event: nothing of the row may come after it, so its tokens are not merged past it.
      urgent_ = true;
      tokensOf_.erase(e.id);
      held_.push_back(std::move(e));
      continue;
    }
    auto [it, added] = tokensOf_.try_emplace(e.id, held_.size());
    if (added) {
      held_.push_back(std::move(e));
      continue;
    }
    Event& row = held_[it->second];
    row.tokens.insert(row.tokens.end(), e.tokens.begin(), e.tokens.end());
    // Logprobs stay aligned with the tokens: a request asks for them on all its tokens or none.
    row.logprobs.insert(row.logprobs.end(), std::make_move_iterator(e.logprobs.begin()),
                        std::make_move_iterator(e.logprobs.end()));
  }
  events.clear();
}

bool Outbox::Due() const {
  if (held_.empty()) return false;
  return urgent_ || std::chrono::steady_clock::now() - last_ >= interval_;
}

std::vector<Event> Outbox::Take() {
  std::vector<Event> out = std::move(held_);
  held_.clear();
  tokensOf_.clear();
  urgent_ = false;
  last_ = std::chrono::steady_clock::now();
  return out;
}

}  // namespace darkbloom
