// The step loop. Output must not depend on what else is running (same request and seed: same tokens
// at batch 1 and batch N), which rests on three llama.cpp facts (bit-compared on CPU, see the TS
// engine's step-loop.ts):
// 1. ggml's CPU matmuls are row-independent, so a decode step of one token per row is batch-invariant.
// 2. How a prompt is split into ubatches changes its numerics, so prompts are prefilled in fixed-size
//    chunks aligned to the prompt start, each chunk alone in its own llama_decode and one ubatch
//    (n_ubatch >= prefillChunk, set by the scheduler), never mixed with other rows' tokens.
// 3. CPU flash attention over an F16 cache picks kernels by batch shape, so it is off unless the KV
//    cache is quantized (where llama.cpp requires it, and that kernel is shape-invariant).
// Decode tokens and a prompt chunk never share a llama_decode: with one KV stream per row (the
// non-unified cache that gives each row its own contextPerRow cells) llama.cpp splits a batch into
// ubatches of equal length per sequence (split_equal in llama-kv-cache.cpp's init_batch), so a mixed
// batch would run the chunk one token per ubatch beside the decode rows: slower than alternating, and
// no longer the fixed-size chunk of fact 2. A unified cache would allow mixing but makes every row
// attend over every row's cells.
#include "engine.h"

#include <algorithm>
#include <chrono>

#include "common.h"

namespace dbllama {
namespace {

double Since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

Engine::Engine(llama_model* model, llama_context* ctx, EngineOptions options, Emit emit)
    : model_(model),
      vocab_(llama_model_get_vocab(model)),
      ctx_(ctx),
      batch_(llama_batch_init(std::max(options.prefillChunk, options.rows), 0, 1)),
      nVocab_(llama_vocab_n_tokens(vocab_)),
      options_(options),
      emit_(std::move(emit)),
      rows_(options.rows),
      book_(options.rows, options.queueDepth) {
  for (int32_t i = 0; i < options.rows; i++) rows_[i].seq = i;
  stats_.rows = options.rows;
  stats_.kvCells = llama_n_ctx(ctx);
}

Engine::~Engine() {
  // Run() frees both on the engine thread; this covers an engine whose thread never started.
  for (Row& r : rows_) llama_sampler_free(r.chain);
  if (ctx_) llama_free(ctx_);
  if (batch_.token) llama_batch_free(batch_);
}

void Engine::Submit(Submission&& s) {
  std::lock_guard<std::mutex> lk(mu_);
  book_.Submit(std::move(s));
  cv_.notify_one();
}

CancelResult Engine::Cancel(const std::string& id) {
  std::lock_guard<std::mutex> lk(mu_);
  return book_.Cancel(id);
}

void Engine::RequestClose() {
  std::lock_guard<std::mutex> lk(mu_);
  book_.Close();
  cv_.notify_one();
}

BatchStats Engine::Stats() {
  std::lock_guard<std::mutex> lk(mu_);
  BatchStats s = stats_;
  book_.CountInto(s);
  return s;
}

void Engine::Run() {
  try {
    Loop();
  } catch (const std::exception& e) {
    FailAll(std::string("the engine thread failed: ") + e.what());
  } catch (...) {
    FailAll("the engine thread failed");
  }
  for (Row& r : rows_) {
    llama_sampler_free(r.chain);
    r.chain = nullptr;
  }
  llama_batch_free(batch_);
  batch_ = {};
  llama_free(ctx_);
  ctx_ = nullptr;
  std::lock_guard<std::mutex> lk(mu_);
  book_.Finish();
  stats_.kvCellsUsed = 0;
}

void Engine::Loop() {
  for (;;) {
    bool closing;
    std::vector<Event> events;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return book_.HasWork(); });
      closing = book_.BeginStep(jsGone_, rows_, events);
    }
    // Retiring first frees the cells of finished and cancelled rows before anything is admitted.
    Retire(events);
    if (closing) {
      Publish(events);
      return;
    }
    Admit();
    Publish(events);
    // Rows that finished in a step are retired before JS hears of it: once a done event arrives,
    // the row and its KV cells are free (stats say so, and the next submission has the row).
    DecodeStep(events);
    Retire(events);
    Publish(events);
    PrefillStep(events);
    Retire(events);
    Publish(events);
  }
}

void Engine::Retire(std::vector<Event>& events) {
  bool retired = false;
  for (Row& r : rows_) {
    if (!r.busy || !(r.finished || r.cancelled)) continue;
    if (!r.finished) events.push_back(Done(r.id, "cancelled", static_cast<int32_t>(r.prompt.size()), r.generated));
    llama_memory_seq_rm(llama_get_memory(ctx_), r.seq, -1, -1);
    llama_sampler_free(r.chain);
    std::string id = std::move(r.id);
    int32_t seq = r.seq;
    r = Row{};
    r.seq = seq;
    retired = true;
    std::lock_guard<std::mutex> lk(mu_);
    book_.Retire(id);
  }
  if (retired) UpdateStats(0, 0, 0, 0, false);
}

void Engine::Admit() {
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
    // Penalties look back over the generated tokens only (the chain accepts each sampled token):
    // OpenAI defines presence and frequency penalties on what was sampled so far, and vLLM and the
    // llama engine (node-llama-cpp) count them that way; llama-server's counting of the prompt too
    // would make the same request sample differently on the two engines.
    r.chain = BuildSamplerChain(s.sampling, nVocab_);
  }
}

void Engine::DecodeStep(std::vector<Event>& events) {
  std::vector<Row*> decoding;
  for (Row& r : rows_)
    if (r.busy && r.decoding && !r.finished && !r.cancelled) decoding.push_back(&r);
  if (decoding.empty()) return;
  auto start = std::chrono::steady_clock::now();
  batch_.n_tokens = static_cast<int32_t>(decoding.size());
  for (size_t i = 0; i < decoding.size(); i++) {
    batch_.token[i] = decoding[i]->last;
    batch_.pos[i] = decoding[i]->nPast;
    batch_.n_seq_id[i] = 1;
    batch_.seq_id[i][0] = decoding[i]->seq;
    batch_.logits[i] = 1;
  }
  int32_t rc = llama_decode(ctx_, batch_);
  if (rc != 0) {
    for (Row* r : decoding) Fail(*r, "llama_decode failed in a decode step (" + std::to_string(rc) + ")", events);
    return;
  }
  int64_t generated = 0;
  for (size_t i = 0; i < decoding.size(); i++) {
    decoding[i]->nPast++;
    generated += Accept(*decoding[i], llama_sampler_sample(decoding[i]->chain, ctx_, static_cast<int32_t>(i)), events);
  }
  UpdateStats(0, Since(start), 0, generated, true);
}

void Engine::PrefillStep(std::vector<Event>& events) {
  Row* row = nullptr;
  for (Row& r : rows_)
    if (r.busy && !r.decoding && !r.finished && !r.cancelled && (!row || r.admitted < row->admitted)) row = &r;
  if (!row) return;
  auto start = std::chrono::steady_clock::now();
  const int32_t from = row->prefilled;
  const int32_t size = static_cast<int32_t>(row->prompt.size());
  const int32_t to = std::min(size, from + options_.prefillChunk);
  const bool last = to == size;
  batch_.n_tokens = to - from;
  for (int32_t p = from; p < to; p++) {
    int32_t i = p - from;
    batch_.token[i] = row->prompt[p];
    batch_.pos[i] = p;
    batch_.n_seq_id[i] = 1;
    batch_.seq_id[i][0] = row->seq;
    batch_.logits[i] = last && p == to - 1;
  }
  int32_t rc = llama_decode(ctx_, batch_);
  if (rc != 0) {
    Fail(*row, "llama_decode failed in a prefill chunk (" + std::to_string(rc) + ")", events);
    return;
  }
  row->prefilled = to;
  row->nPast = to;
  int64_t generated = 0;
  if (last) {
    // The last chunk's logits give the first completion token; the row joins the next decode step.
    row->decoding = true;
    generated = Accept(*row, llama_sampler_sample(row->chain, ctx_, to - from - 1), events);
  }
  UpdateStats(Since(start), 0, to - from, generated, false);
}

bool Engine::Accept(Row& row, llama_token token, std::vector<Event>& events) {
  if (llama_vocab_is_eog(vocab_, token)) {
    Finish(row, "stop", events);  // the end-of-generation token itself is not delivered
    return false;
  }
  row.generated++;
  events.push_back(TokenEvent(row.id, token));
  if (row.generated >= row.maxTokens)
    Finish(row, "length", events);
  else
    row.last = token;
  return true;
}

void Engine::Finish(Row& row, const char* reason, std::vector<Event>& events) {
  row.finished = true;
  events.push_back(Done(row.id, reason, static_cast<int32_t>(row.prompt.size()), row.generated));
}

void Engine::Fail(Row& row, const std::string& message, std::vector<Event>& events) {
  row.finished = true;
  events.push_back(EngineFailed(row.id, message));
}

void Engine::FailAll(const std::string& message) {
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

void Engine::Publish(std::vector<Event>& events) {
  if (events.empty()) return;
  if (!jsGone_ && !emit_(std::move(events))) jsGone_ = true;
  events.clear();
}

void Engine::UpdateStats(double prefillSeconds, double decodeSeconds, int64_t promptTokens, int64_t generated,
                         bool decodeStep) {
  int64_t used = 0;
  for (const Row& r : rows_)
    if (r.busy) used += r.nPast;
  std::lock_guard<std::mutex> lk(mu_);
  stats_.kvCellsUsed = used;
  stats_.Add(prefillSeconds, decodeSeconds, promptTokens, generated, decodeStep);
}

}  // namespace dbllama
