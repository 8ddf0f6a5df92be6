// The step loop. Output must not depend on what else is running (same request and seed: same tokens
// at batch 1 and batch N), which rests on three llama.cpp facts (bit-compared on CPU, see the TS
// engine's step-loop.ts):
// 1. ggml's CPU matmuls are row-independent, so a decode step of one token per row is batch-invariant.
// 2. How a prompt is split into ubatches changes its numerics, so prompts are prefilled in fixed-size
//    chunks aligned to the prompt start, each chunk alone in its own llama_decode and one ubatch
//    (n_ubatch >= prefillChunk, set by the scheduler), never mixed with other rows' tokens.
// 3. CPU flash attention over an F16 cache picks kernels by batch shape (a lone one-token stream over
//    512 cells or more has its cells split across threads and the partial softmaxes merged; rows
//    that share a step are each attended by one thread), so it is off unless the KV cache is
//    quantized (where llama.cpp requires it, and that kernel never splits).
// Decode tokens and a prompt chunk never share a llama_decode: with one KV stream per row (the
// non-unified cache that gives each row its own contextPerRow cells) llama.cpp splits a batch into
// ubatches of equal length per sequence (split_equal in llama-kv-cache.cpp's init_batch), so a mixed
// batch would run the chunk one token per ubatch beside the decode rows: slower than alternating, and
// no longer the fixed-size chunk of fact 2. A unified cache would allow mixing but makes every row
// attend over every row's cells.
// Logprobs read the context's logits after sampling (llama_get_logits_ith): they are still the raw
// ones, since llama_sampler_sample and SampleToken copy them into candidate arrays and every sampler
// of the chain and the grammar works on those copies (llama-sampler.cpp); and with no backend sampler
// set on the context, llama_get_logits_ith returns the model's output itself.
#include "engine.h"

#include <algorithm>
#include <chrono>

#include "common.h"

namespace dbllama {

// BatchCore is handed mu_ before the member is constructed: it only keeps the reference. The stats
// are set before any other thread has the engine.
Engine::Engine(llama_model* model, llama_context* ctx, EngineOptions options, Emit emit)
    : BatchCore(mu_, options.rows, options.queueDepth, options.deliveryIntervalUs),
      model_(model),
      vocab_(llama_model_get_vocab(model)),
      ctx_(ctx),
      batch_(llama_batch_init(std::max(options.prefillChunk, options.rows), 0, 1)),
      nVocab_(llama_vocab_n_tokens(vocab_)),
      options_(options),
      emit_(std::move(emit)) {
  StatsLocked().kvCells = llama_n_ctx(ctx);
}

Engine::~Engine() {
  // Run() frees both on the engine thread; this covers an engine whose thread never started.
  for (Row& r : rows_) {
    llama_sampler_free(r.chain);
    if (r.grammar) llama_sampler_free(r.grammar);
  }
  if (ctx_) llama_free(ctx_);
  if (batch_.token) llama_batch_free(batch_);
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
    if (r.grammar) llama_sampler_free(r.grammar);
    r.chain = nullptr;
    r.grammar = nullptr;
  }
  llama_batch_free(batch_);
  batch_ = {};
  llama_free(ctx_);
  ctx_ = nullptr;
  FinishBook();
}

void Engine::Loop() {
  for (;;) {
    bool closing;
    std::vector<Event> events;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return HasWorkLocked(); });
      closing = BeginStepLocked(events);
    }
    StepBody(closing, events);
    if (closing) return;
  }
}

void Engine::CheckSampling(const SamplingParams& sampling) const {
  if (sampling.grammar.empty()) return;
  llama_sampler* grammar = llama_sampler_init_grammar(vocab_, sampling.grammar.c_str(), "root");
  if (grammar == nullptr) throw CodedError(code::kBadInput, "the grammar does not parse (llama.cpp's GBNF)");
  llama_sampler_free(grammar);
}

void Engine::StartRow(Row& row, const SamplingParams& sampling) {
  if (!sampling.grammar.empty() && !fragmentsKnown_) {
    fragments_ = PartialCharacterTokens(vocab_);
    fragmentsKnown_ = true;
  }
  row.chain = BuildSamplerChain(sampling, vocab_, fragments_);
  row.grammar = BuildGrammar(sampling, vocab_);
}

void Engine::ReleaseRow(Row& row) {
  llama_memory_seq_rm(llama_get_memory(ctx_), Seq(row), -1, -1);
  llama_sampler_free(row.chain);
  if (row.grammar) llama_sampler_free(row.grammar);
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
    batch_.seq_id[i][0] = Seq(*decoding[i]);
    batch_.logits[i] = 1;
  }
  int32_t rc = llama_decode(ctx_, batch_);
  if (rc != 0) {
    for (Row* r : decoding) Fail(*r, "llama_decode failed in a decode step (" + std::to_string(rc) + ")", events);
    return;
  }
  int64_t generated = 0;
  for (size_t i = 0; i < decoding.size(); i++) {
    Row& row = *decoding[i];
    row.nPast++;
    const int32_t idx = static_cast<int32_t>(i);
    const int32_t token = SampleToken(row.chain, row.grammar, ctx_, idx, candidates_);
    generated += Accept(row, token, events, llama_get_logits_ith(ctx_, idx));
  }
  UpdateStats(0, SecondsSince(start), 0, generated, true);
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
    batch_.seq_id[i][0] = Seq(*row);
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
    const int32_t idx = to - from - 1;
    const int32_t token = SampleToken(row->chain, row->grammar, ctx_, idx, candidates_);
    generated = Accept(*row, token, events, llama_get_logits_ith(ctx_, idx));
  }
  UpdateStats(SecondsSince(start), 0, to - from, generated, false);
}

}  // namespace dbllama
