// The JS face that the batching cores' scheduler classes (llama/scheduler.cc, mlx/addon.cc) share: the
// arguments of submit and cancel, stats, each step's events, and the state a scheduler object keeps on
// the JS thread (SchedulerJs). How a class runs its engine (a thread of its own for llama; the model's
// engine thread for MLX) stays in its addon.
#pragma once

#include <napi.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "batch_types.h"
#include "request_book.h"

namespace darkbloom {

// A request id: a string of 1 to 1024 bytes. Throws bad_input otherwise.
std::string ParseRequestId(Napi::Env env, Napi::Value value);

// submit(id, prompt: Int32Array, maxTokens, sampling?) for a model of nVocab tokens and rows of
// contextPerRow positions. Throws bad_input, or context_length_exceeded when the prompt plus maxTokens
// does not fit a row.
Submission ParseSubmission(Napi::Env env, const Napi::CallbackInfo& info, int32_t nVocab, int32_t contextPerRow);

// stats() as JS sees it; kvBytes where the backend knows the KV cache's size (MLX).
Napi::Object StatsToJs(Napi::Env env, const BatchStats& stats, std::optional<int64_t> kvBytes = std::nullopt);

// One step's events as the JS array onStep gets; onTerminal runs for each done or error event.
Napi::Array EventsToJs(Napi::Env env, const std::vector<Event>& events, const std::function<void()>& onTerminal);

// What a scheduler object keeps on the JS thread: the ThreadSafeFunction that carries each step's
// events to onStep, whether the object holds the event loop open (only while submitted requests are
// outstanding, or while it closes), and the close() promises, resolved once the engine is done with it.
// The object owns one and keeps itself alive (Ref) until Finalized.
class SchedulerJs {
 public:
  // Makes the ThreadSafeFunction over onStep, idle (it does not keep the process alive: a submission
  // or close() holds it). finalized runs on the JS thread once the engine has released it.
  void Start(Napi::Env env, Napi::Function onStep, const char* name, int32_t nVocab, int32_t contextPerRow,
             std::function<void(Napi::Env)> finalized);
  const Napi::ThreadSafeFunction& tsfn() const { return tsfn_; }
  bool finalized() const { return finalized_; }

  // Engine thread: hands one step's events to onStep, blocking while the ThreadSafeFunction's small
  // queue is full, so a JS consumer that falls behind stalls the engine instead of piling up memory.
  // False: JS is gone.
  bool Emit(std::vector<Event>&& events);

  // The JS methods: submit(id, prompt, maxTokens, sampling?), cancel(id), close() → Promise.
  Napi::Value Submit(const Napi::CallbackInfo& info, SchedulerCore& core);
  Napi::Value Cancel(const Napi::CallbackInfo& info, SchedulerCore& core);
  Napi::Value Close(const Napi::CallbackInfo& info, SchedulerCore& core);
  // JS thread, from the owner's finalized: resolves the close() promises.
  void Finalized(Napi::Env env);

 private:
  void Settled(Napi::Env env);
  void HoldLoop(Napi::Env env, bool hold);

  Napi::ThreadSafeFunction tsfn_;
  std::function<void(Napi::Env)> onFinalized_;
  int32_t contextPerRow_ = 0;
  int32_t nVocab_ = 0;
  int64_t outstanding_ = 0;  // submitted and not yet done: only then does the scheduler hold the loop open
  bool holding_ = false;
  bool closing_ = false;
  bool finalized_ = false;
  std::vector<Napi::Promise::Deferred> closeWaiters_;
};

}  // namespace darkbloom
