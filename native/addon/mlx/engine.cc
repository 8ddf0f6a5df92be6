// The step loop, as the llama backend's (addon/llama/engine.cc): rows join and leave at step
// boundaries; each step is one decode of every decoding row (one token each, in one batched forward
// over the batched cache) and one prefill chunk of the oldest prefilling row, so a long prompt never
// stalls the rows that decode.
//
// Output does not depend on what else runs, as far as the arithmetic allows:
// - a prompt is prefilled alone, in fixed-size chunks aligned to its start, into the staging cache:
//   the same computation whatever else is running;
// - a decode step's projections (quantized_matmul, the dequantized embedding) are row by row;
// - attention sees a row's own positions only (the left padding is masked out), but the batched
//   attention's reductions run over the padded length, so on some backends a row's logits differ in
//   the last bits between batch 1 and batch N (the tests compare tokens).
#include "engine.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <shared_mutex>

namespace dbmlx {
namespace {

// process.exit() calls exit() without tearing the JS environment down first: the engine threads keep
// running while exit() destroys MLX's statics (its allocator, its stream threads), and one inside an
// evaluation then crashes the exiting process. So every stretch of MLX work holds this lock shared,
// and an exit handler, registered once MLX's statics exist (after the first engine job: they are
// destroyed in reverse order of registration, so it runs before them), takes it exclusively and
// keeps it: engine threads finish what they are evaluating and park at their next stretch.
std::shared_timed_mutex exitLock;
std::atomic<bool> exitLocked{false};
thread_local int workDepth = 0;

void OnExit() {
  if (exitLocked.exchange(true)) return;
  // A thread blocked inside a stretch (it should not be: emitting to JS releases it) would hold the
  // exit forever: give up after a while and let exit() go on.
  (void)exitLock.try_lock_for(std::chrono::seconds(5));
}

// Registered after the first job (a model load) and again after the first scheduler step, so that it
// also precedes the statics MLX first makes while decoding (its CPU thread pool, ...).
enum class Arm { Loaded, Stepped };
void ArmExitGuard(Arm when) {
  static std::once_flag loaded, stepped;
  std::call_once(when == Arm::Loaded ? loaded : stepped, [] { std::atexit(OnExit); });
}

// A stretch of MLX work on an engine thread.
struct MlxWork {
  MlxWork() {
    if (workDepth++ == 0) exitLock.lock_shared();
  }
  ~MlxWork() {
    if (--workDepth == 0) exitLock.unlock_shared();
  }
  MlxWork(const MlxWork&) = delete;
  MlxWork& operator=(const MlxWork&) = delete;
};

// Within a stretch, a wait for JS (which may never come while the process exits) outside it.
struct MlxPause {
  int depth = workDepth;
  MlxPause() {
    if (depth > 0) {
      exitLock.unlock_shared();
      workDepth = 0;
    }
  }
  ~MlxPause() {
    if (depth > 0) {
      exitLock.lock_shared();
      workDepth = depth;
    }
  }
  MlxPause(const MlxPause&) = delete;
  MlxPause& operator=(const MlxPause&) = delete;
};

// Positions kept past contextPerRow in the batched cache, so that rows of different lengths are
// re-aligned (shifted left) once every so many steps instead of at every step.
int32_t Slack(int32_t contextPerRow) { return std::min<int32_t>(256, contextPerRow); }

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Scheduler

Scheduler::Scheduler(Engine* engine, const Transformer& model, SchedulerOptions options)
    : BatchCore(engine->mu(), options.rows, options.queueDepth, options.deliveryIntervalUs),
      engine_(engine),
      model_(model),
      options_(options),
      nVocab_(model.config().vocab) {
  const ModelConfig& c = model.config();
  eos_.insert(c.eosTokens.begin(), c.eosTokens.end());
  try {
    cache_ = std::make_unique<KvCache>(c.layers, options.rows, c.kvHeads, c.headDim,
                                       options.contextPerRow + Slack(options.contextPerRow), options.kvBits,
                                       model.dtype());
    staging_ = std::make_unique<KvCache>(c.layers, 1, c.kvHeads, c.headDim, options.contextPerRow, options.kvBits,
                                         model.dtype());
  } catch (const std::exception& e) {
    throw CodedError(code::kEngineFailed, std::string("cannot allocate the KV cache: ") + e.what());
  }
  SchedulerStats& stats = StatsLocked();  // no JS thread has the scheduler yet
  stats.kvCells = static_cast<int64_t>(options.rows) * cache_->capacity();
  stats.kvBytes = cache_->bytes() + staging_->bytes();
}

Scheduler::~Scheduler() = default;

void Scheduler::Bind(Emit emit, std::function<void()> onFinished) {
  emit_ = std::move(emit);
  onFinished_ = std::move(onFinished);
}

void Scheduler::Wake() { engine_->Wake(); }

bool Scheduler::Deliver(std::vector<Event>&& events) {
  MlxPause pause;  // emitting blocks while JS is behind
  return emit_(std::move(events));
}

bool Scheduler::Step() {
  bool closing;
  std::vector<Event> events;
  {
    std::lock_guard<std::mutex> lk(engine_->mu());
    if (!HasWorkLocked()) return true;
    closing = BeginStepLocked(events);
  }
  try {
    StepBody(closing, events);
  } catch (const std::exception& e) {
    FailAll(std::string("the engine failed: ") + e.what());
    closing = true;
  }
  if (!closing) return true;
  // Finished: everything it held is freed here, on the engine thread.
  for (Row& r : rows_) r = Row{};
  slots_.clear();
  staged_ = nullptr;
  cache_.reset();
  staging_.reset();
  FinishBook();
  return false;
}

void Scheduler::Finished() {
  if (onFinished_) onFinished_();
}

void Scheduler::StartRow(Row& row, const SamplingParams& sampling) {
  row.sampler = std::make_unique<HostSampler>(sampling, nVocab_);
}

void Scheduler::ReleaseRow(Row& row) {
  if (row.slot >= 0) {
    // The last slot moves into the freed one: the decoding rows stay in slots [0, n).
    const int32_t last = static_cast<int32_t>(slots_.size()) - 1;
    if (row.slot != last) {
      cache_->MoveSlot(last, row.slot, idx_);
      slots_[row.slot] = slots_[last];
      slots_[row.slot]->slot = row.slot;
    }
    slots_.pop_back();
    if (slots_.empty()) idx_ = 0;
  }
  if (staged_ == &row) staged_ = nullptr;
}

void Scheduler::DecodeStep(std::vector<Event>& events) {
  const int32_t n = static_cast<int32_t>(slots_.size());
  if (n == 0) return;
  auto start = std::chrono::steady_clock::now();
  // Row j holds positions [idx_ - nPast_j, idx_). Shift every row left by the smallest padding when
  // the cache is full, or when at least half of what attention reads is padding.
  int32_t minPad = idx_;
  for (Row* r : slots_) minPad = std::min(minPad, idx_ - r->nPast);
  if (minPad > 0 && (idx_ + 1 > cache_->capacity() || (minPad >= 32 && 2 * minPad >= idx_))) {
    cache_->Shift(n, minPad, 0, idx_ - minPad);
    idx_ -= minPad;
  }
  std::vector<int32_t> tokens(n), offsets(n), pads(n);
  for (int32_t j = 0; j < n; j++) {
    tokens[j] = slots_[j]->last;
    offsets[j] = slots_[j]->nPast;  // the new token's position
    pads[j] = idx_ - slots_[j]->nPast;
  }
  const int32_t len = idx_ + 1;
  mx::array mask = mx::reshape(
      mx::greater_equal(mx::expand_dims(mx::arange(len), 0), mx::array(pads.data(), {n, 1}, mx::int32)),
      {n, 1, 1, len});
  const int32_t pos = idx_;
  const float scale = model_.scale();
  KvCache& cache = *cache_;
  auto attend = [&](int32_t layer, const mx::array& q, const mx::array& k, const mx::array& v) {
    cache.Write(layer, pos, k, v);
    return cache.Attend(layer, q, len, mask, false, scale);
  };
  mx::array logits = model_.Logits(
      model_.Hidden(mx::array(tokens.data(), {n, 1}, mx::int32), mx::array(offsets.data(), {n}, mx::int32), attend));
  std::vector<mx::array> outputs = cache.Arrays();
  outputs.push_back(logits);
  mx::eval(outputs);
  idx_++;
  const float* data = logits.data<float>();
  int64_t generated = 0;
  std::vector<Row*> decoded = slots_;  // Accept does not move slots (retiring comes after the step)
  for (int32_t j = 0; j < n; j++) {
    Row& r = *decoded[j];
    r.nPast++;
    // The sampler biases and penalizes its own copy: these logits stay raw for the logprobs.
    const float* rowLogits = data + static_cast<int64_t>(j) * nVocab_;
    generated += Accept(r, r.sampler->Sample(rowLogits), events, rowLogits);
  }
  UpdateStats(0, SecondsSince(start), 0, generated, true);
}

void Scheduler::PrefillStep(std::vector<Event>& events) {
  Row* row = nullptr;
  for (Row& r : rows_)
    if (r.busy && r.slot < 0 && !r.finished && !r.cancelled && (!row || r.admitted < row->admitted)) row = &r;
  if (!row) return;
  auto start = std::chrono::steady_clock::now();
  if (staged_ != row) {
    // Only the oldest prefilling row is ever in staging, and it stays until it is in (or retired).
    staged_ = row;
    row->prefilled = 0;
  }
  const int32_t from = row->prefilled;
  const int32_t size = static_cast<int32_t>(row->prompt.size());
  const int32_t to = std::min(size, from + options_.prefillChunk);
  const bool last = to == size;
  const float scale = model_.scale();
  KvCache& staging = *staging_;
  auto attend = [&](int32_t layer, const mx::array& q, const mx::array& k, const mx::array& v) {
    staging.Write(layer, from, k, v);
    return staging.Attend(layer, q, to, std::nullopt, true, scale);
  };
  // Only the last chunk's last position has logits (the first completion token); the other chunks
  // evaluate the cache alone, which leaves the final layer's attention and MLP out of their graphs.
  mx::array hidden = model_.Hidden(mx::array(row->prompt.data() + from, {1, to - from}, mx::int32),
                                   mx::array(from, mx::int32), attend, /*lastPositionOnly=*/true);
  std::vector<mx::array> outputs = staging.Arrays();
  std::optional<mx::array> logits;
  if (last) {
    logits = model_.Logits(hidden);
    outputs.push_back(*logits);
  }
  mx::eval(outputs);
  row->prefilled = to;
  int64_t generated = 0;
  if (last) {
    Join(*row);
    const float* rowLogits = logits->data<float>();
    generated = Accept(*row, row->sampler->Sample(rowLogits), events, rowLogits);
  }
  UpdateStats(SecondsSince(start), 0, to - from, generated, false);
}

void Scheduler::Join(Row& row) {
  const int32_t n = static_cast<int32_t>(row.prompt.size());
  const int32_t slot = static_cast<int32_t>(slots_.size());
  if (slot == 0) idx_ = 0;
  if (idx_ < n) {
    // The decoding rows move right so that the new row fits before the shared end.
    cache_->Shift(slot, 0, n - idx_, idx_);
    idx_ = n;
  }
  cache_->CopySlot(*staging_, 0, slot, 0, idx_ - n, n);
  row.slot = slot;
  row.nPast = n;
  slots_.push_back(&row);
  staged_ = nullptr;
}

// ---------------------------------------------------------------------------------------------------
// Engine

Engine::Engine() : thread_([this] { Loop(); }) {}

Engine::~Engine() { Stop(); }

void Engine::Post(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_) throw CodedError(code::kClosed, "the model is closed");
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
}

void Engine::Attach(std::shared_ptr<Scheduler> scheduler) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_) scheduler->CloseLocked();
    schedulers_.push_back(std::move(scheduler));
  }
  cv_.notify_one();
}

void Engine::Wake() { cv_.notify_one(); }

void Engine::Stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
    for (auto& s : schedulers_) s->CloseLocked();
  }
  cv_.notify_one();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

void Engine::Loop() {
  for (;;) {
    std::deque<std::function<void()>> jobs;
    std::vector<std::shared_ptr<Scheduler>> schedulers;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] {
        return stopping_ || !jobs_.empty() ||
               std::any_of(schedulers_.begin(), schedulers_.end(), [](const auto& s) { return s->HasWorkLocked(); });
      });
      if (stopping_ && jobs_.empty() && schedulers_.empty()) break;
      jobs.swap(jobs_);
      schedulers = schedulers_;
    }
    for (auto& job : jobs) {
      MlxWork work;
      job();  // jobs catch their own errors
    }
    if (!jobs.empty()) ArmExitGuard(Arm::Loaded);
    for (auto& s : schedulers) {
      bool stepping;
      {
        MlxWork work;
        stepping = s->Step();
      }
      ArmExitGuard(Arm::Stepped);
      if (stepping) continue;
      {
        std::lock_guard<std::mutex> lk(mu_);
        schedulers_.erase(std::find(schedulers_.begin(), schedulers_.end(), s));
      }
      s->Finished();
    }
  }
  MlxWork work;
  model_.reset();  // the weights are freed on the thread that made them
}

}  // namespace dbmlx
