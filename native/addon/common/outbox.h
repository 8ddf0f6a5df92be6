// The events a batching core has for JS, held between deliveries. Each delivery wakes the JS thread
// (a thread-safe function call: uv_async_send, a write to an eventfd), and the engine thread pays for
// that wake: measured on a 2-vCPU VM, 17-35 us per delivery, about a sixth of a tiny model's 0.16 ms
// decode step, so delivering every step cost the core 10% of its decode rate (docs/BENCHMARKS.md).
// Held events go out together once `interval` has passed since the last delivery: a step slower
// than the interval (any real model) is delivered at its end as before; faster steps are delivered a
// few at a time, a row's tokens merged into one tokens event. What a consumer waits on is never
// held: a row's first token (time to first token) and every terminal event (done, error) go out at
// once, with everything held before them.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "batch_types.h"

namespace darkbloom {

// A scheduler's deliveryIntervalUs unless JS sets it: at most ~1,000 wakes a second, and a token that
// is not a row's first waits at most the interval and one step.
constexpr int32_t kDefaultDeliveryIntervalUs = 1000;

class Outbox {
 public:
  explicit Outbox(std::chrono::microseconds interval) : interval_(interval) {}

  // Takes a step's events (`events` is left empty), in order; a tokens event joins the row's held
  // one. `urgent`: they hold a row's first token, to deliver at once. Terminal events always are.
  void Add(std::vector<Event>& events, bool urgent);
  // Whether the held events should be delivered now.
  bool Due() const;
  // The held events, in order; the interval restarts now.
  std::vector<Event> Take();

 private:
  std::chrono::microseconds interval_;
  std::chrono::steady_clock::time_point last_{};  // the last delivery (none yet: long ago)
  std::vector<Event> held_;
  std::unordered_map<std::string, size_t> tokensOf_;  // a row's tokens event in held_
  bool urgent_ = false;
};

}  // namespace darkbloom
