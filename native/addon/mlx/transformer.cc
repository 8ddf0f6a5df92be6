// mlx-lm's qwen3.py / llama.py in C++: embedding (a quantized one dequantizes the gathered rows),
// RMSNorm and RoPE from mx::fast, grouped-query attention handed to the caller's cache, a SwiGLU MLP,
// a tied or separate lm_head; every projection a quantized_matmul when the checkpoint is quantized.
#include "transformer.h"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <unordered_map>

namespace dbmlx {
namespace {

using Weights = std::unordered_map<std::string, mx::array>;

std::string Str(const mx::Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); i++) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

[[noreturn]] void Bad(const std::string& message) { throw std::runtime_error(message); }

const mx::array& Need(const Weights& w, const std::string& name) {
  auto it = w.find(name);
  if (it == w.end()) Bad("the checkpoint has no tensor " + name);
  return it->second;
}

std::optional<mx::array> Maybe(const Weights& w, const std::string& name) {
  auto it = w.find(name);
  if (it == w.end()) return std::nullopt;
  return it->second;
}

// A float tensor in the compute dtype; anything else (quantized codes) as stored.
mx::array Float(const mx::array& a, mx::Dtype dtype) {
  return mx::issubdtype(a.dtype(), mx::floating) && a.dtype() != dtype ? mx::astype(a, dtype) : a;
}

mx::array Vector(const Weights& w, const std::string& name, int32_t size, mx::Dtype dtype) {
  mx::array a = Need(w, name);
  if (a.ndim() != 1 || a.shape(0) != size) Bad(name + " has shape " + Str(a.shape()) + ", not [" + std::to_string(size) + "]");
  return Float(a, dtype);
}

// `prefix`.weight [out, in] (or uint32 codes [out, in * bits / 32] with .scales and .biases
// [out, in / group_size]), and an optional .bias [out].
Linear LoadLinear(const Weights& w, const std::string& prefix, int32_t out, int32_t in, mx::Dtype dtype) {
  Linear l;
  mx::array weight = Need(w, prefix + ".weight");
  l.scales = Maybe(w, prefix + ".scales");
  if (l.scales) {
    l.biases = Maybe(w, prefix + ".biases");
    if (!l.biases) Bad(prefix + " has .scales but no .biases (only mlx's affine quantization is supported)");
    if (weight.dtype() != mx::uint32 || weight.ndim() != 2 || weight.shape(0) != out || l.scales->ndim() != 2 ||
        l.scales->shape(0) != out || l.scales->shape() != l.biases->shape())
      Bad(prefix + " is not an affine-quantized [" + std::to_string(out) + ", " + std::to_string(in) +
          "] matrix (weight " + Str(weight.shape()) + ", scales " + Str(l.scales->shape()) + ")");
    int32_t packed = weight.shape(1), groups = l.scales->shape(1);
    if (groups <= 0 || in % groups != 0 || (static_cast<int64_t>(packed) * 32) % in != 0)
      Bad(prefix + ": the shapes of its weight " + Str(weight.shape()) + " and scales " + Str(l.scales->shape()) +
          " do not fit an input of " + std::to_string(in));
    l.bits = static_cast<int32_t>(static_cast<int64_t>(packed) * 32 / in);
    l.groupSize = in / groups;
    if (l.bits != 2 && l.bits != 3 && l.bits != 4 && l.bits != 5 && l.bits != 6 && l.bits != 8)
      Bad(prefix + " is quantized to " + std::to_string(l.bits) + " bits");
    if (l.groupSize != 32 && l.groupSize != 64 && l.groupSize != 128)
      Bad(prefix + " has quantization groups of " + std::to_string(l.groupSize));
    l.w = weight;
    l.scales = Float(*l.scales, dtype);
    l.biases = Float(*l.biases, dtype);
  } else {
    if (weight.ndim() != 2 || weight.shape(0) != out || weight.shape(1) != in)
      Bad(prefix + ".weight has shape " + Str(weight.shape()) + ", not [" + std::to_string(out) + ", " +
          std::to_string(in) + "]");
    if (!mx::issubdtype(weight.dtype(), mx::floating)) Bad(prefix + ".weight is not a float tensor");
    l.w = Float(weight, dtype);
  }
  if (auto b = Maybe(w, prefix + ".bias")) l.bias = Vector(w, prefix + ".bias", out, dtype);
  return l;
}

}  // namespace

mx::array Linear::operator()(const mx::array& x) const {
  mx::array y = bits ? mx::quantized_matmul(x, *w, *scales, *biases, true, groupSize, bits)
                     : mx::matmul(x, mx::transpose(*w));
  return bias ? mx::add(y, *bias) : y;
}

mx::array Linear::Rows(const mx::array& ids, mx::Dtype dtype) const {
  if (!bits) return mx::take(*w, ids, 0);
  return mx::dequantize(mx::take(*w, ids, 0), mx::take(*scales, ids, 0), mx::take(*biases, ids, 0), groupSize, bits,
                        "affine", std::nullopt, dtype);
}

Transformer::Transformer(ModelConfig config, std::optional<mx::Dtype> computeDtype)
    : config_(std::move(config)), dtype_(computeDtype.value_or(mx::float32)) {
  const ModelConfig& c = config_;
  if (c.architecture != "qwen3" && c.architecture != "llama")
    Bad("unsupported architecture " + c.architecture + " (qwen3 and llama are)");
  if (c.hidden <= 0 || c.layers <= 0 || c.intermediate <= 0 || c.heads <= 0 || c.kvHeads <= 0 || c.headDim <= 0 ||
      c.vocab <= 0 || c.heads % c.kvHeads != 0 || c.headDim % 2 != 0)
    Bad("config.json's dimensions are inconsistent");
  if (c.files.empty()) Bad("the checkpoint has no .safetensors files");
  scale_ = 1.0f / std::sqrt(static_cast<float>(c.headDim));

  Weights w;
  for (const std::string& file : c.files) {
    auto loaded = mx::load_safetensors(file);
    for (auto& [name, a] : loaded.first) w.insert_or_assign(name, a);
  }
  if (!computeDtype) dtype_ = Need(w, "model.norm.weight").dtype();
  if (!mx::issubdtype(dtype_, mx::floating)) Bad("model.norm.weight is not a float tensor");

  const int32_t qDim = c.heads * c.headDim, kvDim = c.kvHeads * c.headDim;
  embed_ = LoadLinear(w, "model.embed_tokens", c.vocab, c.hidden, dtype_);
  if (!c.tieWordEmbeddings) lmHead_ = LoadLinear(w, "lm_head", c.vocab, c.hidden, dtype_);
  norm_ = Vector(w, "model.norm.weight", c.hidden, dtype_);
  for (int32_t i = 0; i < c.layers; i++) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    Layer l;
    l.q = LoadLinear(w, p + "self_attn.q_proj", qDim, c.hidden, dtype_);
    l.k = LoadLinear(w, p + "self_attn.k_proj", kvDim, c.hidden, dtype_);
    l.v = LoadLinear(w, p + "self_attn.v_proj", kvDim, c.hidden, dtype_);
    l.o = LoadLinear(w, p + "self_attn.o_proj", c.hidden, qDim, dtype_);
    l.gate = LoadLinear(w, p + "mlp.gate_proj", c.intermediate, c.hidden, dtype_);
    l.up = LoadLinear(w, p + "mlp.up_proj", c.intermediate, c.hidden, dtype_);
    l.down = LoadLinear(w, p + "mlp.down_proj", c.hidden, c.intermediate, dtype_);
    if (c.architecture == "qwen3") {
      l.qNorm = Vector(w, p + "self_attn.q_norm.weight", c.headDim, dtype_);
      l.kNorm = Vector(w, p + "self_attn.k_norm.weight", c.headDim, dtype_);
    }
    l.inputNorm = Vector(w, p + "input_layernorm.weight", c.hidden, dtype_);
    l.postNorm = Vector(w, p + "post_attention_layernorm.weight", c.hidden, dtype_);
    layers_.push_back(std::move(l));
  }

  if (c.ropeType == "llama3") {
    // mlx-lm's Llama3RoPE: long wavelengths slowed by `factor`, a smooth ramp between.
    const int32_t half = c.headDim / 2;
    const double lowWave = c.ropeOriginalMaxPositions / c.ropeLowFreqFactor;
    const double highWave = c.ropeOriginalMaxPositions / c.ropeHighFreqFactor;
    std::vector<float> freqs(half);
    for (int32_t i = 0; i < half; i++) {
      double f = std::pow(static_cast<double>(c.ropeTheta), 2.0 * i / c.headDim);
      double wave = 2 * M_PI * f;
      if (wave > lowWave) {
        f *= c.ropeFactor;
      } else if (wave > highWave) {
        double smooth = (c.ropeOriginalMaxPositions / wave - c.ropeLowFreqFactor) /
                        (c.ropeHighFreqFactor - c.ropeLowFreqFactor);
        f = f / ((1 - smooth) / c.ropeFactor + smooth);
      }
      freqs[i] = static_cast<float>(f);
    }
    ropeFreqs_ = mx::array(freqs.data(), {half}, mx::float32);
  } else if (c.ropeType != "default" && c.ropeType != "linear") {
    Bad("unsupported rope_scaling type " + c.ropeType);
  }

  std::vector<mx::array> all{norm_};
  auto add = [&](const Linear& l) {
    for (const auto* a : {&l.w, &l.scales, &l.biases, &l.bias})
      if (*a) all.push_back(**a);
  };
  add(embed_);
  if (!c.tieWordEmbeddings) add(lmHead_);
  for (const Layer& l : layers_) {
    for (const Linear* lin : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down}) add(*lin);
    for (const auto* a : {&l.qNorm, &l.kNorm})
      if (*a) all.push_back(**a);
    all.push_back(l.inputNorm);
    all.push_back(l.postNorm);
  }
  if (ropeFreqs_) all.push_back(*ropeFreqs_);
  mx::eval(all);
  for (const mx::array& a : all) bytes_ += static_cast<int64_t>(a.nbytes());
}

mx::array Transformer::Rope(const mx::array& x, const mx::array& offset) const {
  const ModelConfig& c = config_;
  if (ropeFreqs_) return mx::fast::rope(x, c.headDim, c.ropeTraditional, std::nullopt, 1.0f, offset, ropeFreqs_);
  float scale = c.ropeType == "linear" ? 1.0f / c.ropeFactor : 1.0f;
  return mx::fast::rope(x, c.headDim, c.ropeTraditional, c.ropeTheta, scale, offset);
}

mx::array Transformer::Hidden(const mx::array& tokens, const mx::array& ropeOffset, const AttendFn& attend,
                              bool lastPositionOnly) const {
  const ModelConfig& c = config_;
  const int32_t B = tokens.shape(0), L = tokens.shape(1);
  mx::array h = embed_.Rows(tokens, dtype_);
  for (int32_t i = 0; i < c.layers; i++) {
    const Layer& l = layers_[i];
    // The final layer of a last-position-only pass: queries (and all that follows) for position L-1.
    const bool trim = lastPositionOnly && L > 1 && i == c.layers - 1;
    const int32_t Lq = trim ? 1 : L;
    mx::array x = mx::fast::rms_norm(h, l.inputNorm, c.rmsEps);
    if (trim) h = mx::slice(h, {0, L - 1, 0}, {B, L, h.shape(2)});
    mx::array q = mx::reshape(l.q(trim ? mx::slice(x, {0, L - 1, 0}, {B, L, x.shape(2)}) : x),
                              {B, Lq, c.heads, c.headDim});
    mx::array k = mx::reshape(l.k(x), {B, L, c.kvHeads, c.headDim});
    mx::array v = mx::reshape(l.v(x), {B, L, c.kvHeads, c.headDim});
    if (l.qNorm) {
      q = mx::fast::rms_norm(q, *l.qNorm, c.rmsEps);
      k = mx::fast::rms_norm(k, *l.kNorm, c.rmsEps);
    }
    q = Rope(mx::transpose(q, {0, 2, 1, 3}), trim ? mx::add(ropeOffset, mx::array(L - 1, mx::int32)) : ropeOffset);
    k = Rope(mx::transpose(k, {0, 2, 1, 3}), ropeOffset);
    v = mx::transpose(v, {0, 2, 1, 3});
    // A causal mask is aligned to the last key (MLX's and the cache's), so one query sees them all.
    mx::array o = attend(i, q, k, v);
    o = mx::reshape(mx::transpose(o, {0, 2, 1, 3}), {B, Lq, c.heads * c.headDim});
    h = mx::add(h, l.o(o));
    x = mx::fast::rms_norm(h, l.postNorm, c.rmsEps);
    mx::array gate = l.gate(x);
    h = mx::add(h, l.down(mx::multiply(mx::multiply(gate, mx::sigmoid(gate)), l.up(x))));
  }
  return mx::fast::rms_norm(h, norm_, c.rmsEps);
}

mx::array Transformer::Logits(const mx::array& hidden) const {
  const Linear& head = config_.tieWordEmbeddings ? embed_ : lmHead_;
  return mx::astype(head(hidden), mx::float32);
}

// ---------------------------------------------------------------------------------------------------

KvCache::KvCache(int32_t layers, int32_t slots, int32_t kvHeads, int32_t headDim, int32_t capacity, int32_t kvBits,
                 mx::Dtype dtype)
    : slots_(slots), kvHeads_(kvHeads), headDim_(headDim), capacity_(capacity), bits_(kvBits) {
  if (bits_ != 0 && bits_ != 4 && bits_ != 8) Bad("kvBits must be 4 or 8");
  groupSize_ = headDim % 64 == 0 ? 64 : 32;
  if (bits_ && headDim % 32 != 0) Bad("a quantized KV cache needs a head dimension divisible by 32");
  std::vector<mx::array> all;
  for (int32_t l = 0; l < layers; l++) {
    std::vector<mx::array> p;
    if (!bits_) {
      p = {mx::zeros({slots, kvHeads, capacity, headDim}, dtype), mx::zeros({slots, kvHeads, capacity, headDim}, dtype)};
    } else {
      for (int kv = 0; kv < 2; kv++) {
        p.push_back(mx::zeros({slots, kvHeads, capacity, headDim * bits_ / 32}, mx::uint32));
        p.push_back(mx::zeros({slots, kvHeads, capacity, headDim / groupSize_}, dtype));
        p.push_back(mx::zeros({slots, kvHeads, capacity, headDim / groupSize_}, dtype));
      }
    }
    all.insert(all.end(), p.begin(), p.end());
    parts_.push_back(std::move(p));
  }
  mx::eval(all);  // preallocated now, not at the first step
}

int64_t KvCache::bytes() const {
  int64_t n = 0;
  for (const auto& layer : parts_)
    for (const mx::array& a : layer) n += static_cast<int64_t>(a.nbytes());
  return n;
}

std::vector<mx::array> KvCache::Arrays() const {
  std::vector<mx::array> all;
  for (const auto& layer : parts_) all.insert(all.end(), layer.begin(), layer.end());
  return all;
}

void KvCache::Write(int32_t layer, int32_t pos, const mx::array& k, const mx::array& v) {
  auto& p = parts_[layer];
  const int32_t n = k.shape(0), L = k.shape(2);
  auto put = [&](mx::array& dst, const mx::array& src) {
    dst = mx::slice_update(dst, mx::astype(src, dst.dtype()), mx::Shape{0, 0, pos, 0},
                           mx::Shape{n, kvHeads_, pos + L, dst.shape(3)});
  };
  if (!bits_) {
    put(p[0], k);
    put(p[1], v);
    return;
  }
  for (int kv = 0; kv < 2; kv++) {
    std::vector<mx::array> q = mx::quantize(kv ? v : k, groupSize_, bits_);
    for (int j = 0; j < 3; j++) put(p[kv * 3 + j], q[j]);
  }
}

mx::array KvCache::Attend(int32_t layer, const mx::array& q, int32_t len, const std::optional<mx::array>& mask,
                          bool causal, float scale) const {
  const auto& p = parts_[layer];
  const int32_t n = q.shape(0), heads = q.shape(1), Lq = q.shape(2);
  auto view = [&](const mx::array& a) { return mx::slice(a, {0, 0, 0, 0}, {n, kvHeads_, len, a.shape(3)}); };
  if (!bits_) {
    if (causal) return mx::fast::scaled_dot_product_attention(q, view(p[0]), view(p[1]), scale, "causal");
    if (mask) return mx::fast::scaled_dot_product_attention(q, view(p[0]), view(p[1]), scale, "array", *mask);
    return mx::fast::scaled_dot_product_attention(q, view(p[0]), view(p[1]), scale);
  }
  // mlx-lm's quantized_scaled_dot_product_attention: scores and outputs as quantized matmuls.
  const int32_t repeats = heads / kvHeads_;
  mx::array queries = mx::multiply(q, mx::array(scale, q.dtype()));
  std::vector<mx::array> kv;
  for (const mx::array& a : p) kv.push_back(repeats > 1 ? mx::expand_dims(view(a), -3) : view(a));
  if (repeats > 1) queries = mx::reshape(queries, {n, kvHeads_, repeats, Lq, headDim_});
  mx::array scores = mx::quantized_matmul(queries, kv[0], kv[1], kv[2], true, groupSize_, bits_);
  std::optional<mx::array> m = mask;
  if (causal) m = mx::greater_equal(mx::expand_dims(mx::arange(len - Lq, len), 1), mx::expand_dims(mx::arange(len), 0));
  if (m) {
    if (repeats > 1 && m->ndim() > 3) m = mx::expand_dims(*m, -3);
    scores = mx::where(*m, scores, mx::array(mx::finfo(scores.dtype()).min, scores.dtype()));
  }
  scores = mx::softmax(scores, std::vector<int>{-1}, true);
  mx::array out = mx::quantized_matmul(scores, kv[3], kv[4], kv[5], false, groupSize_, bits_);
  return repeats > 1 ? mx::reshape(out, {n, heads, Lq, headDim_}) : out;
}

void KvCache::CopySlot(const KvCache& other, int32_t src, int32_t dst, int32_t from, int32_t to, int32_t len) {
  if (len <= 0) return;
  for (size_t l = 0; l < parts_.size(); l++)
    for (size_t j = 0; j < parts_[l].size(); j++) {
      mx::array& d = parts_[l][j];
      const mx::array& s = other.parts_[l][j];
      mx::array region = mx::slice(s, {src, 0, from, 0}, {src + 1, kvHeads_, from + len, s.shape(3)});
      d = mx::slice_update(d, region, mx::Shape{dst, 0, to, 0}, mx::Shape{dst + 1, kvHeads_, to + len, d.shape(3)});
    }
  mx::eval(Arrays());
}

namespace {

// Moves regions within the same arrays: the regions are materialized (and the views on the old
// buffers dropped) first, so that the updates then write in place instead of copying whole caches.
void Relocate(std::vector<std::vector<mx::array>>& parts, const mx::Shape& start, const mx::Shape& stop,
              const mx::Shape& to) {
  std::vector<mx::array> regions;
  for (auto& layer : parts)
    for (mx::array& a : layer) {
      mx::Shape hi = stop;
      hi[3] = a.shape(3);
      regions.push_back(mx::contiguous(mx::slice(a, start, hi)));
    }
  mx::eval(regions);
  size_t i = 0;
  std::vector<mx::array> all;
  for (auto& layer : parts)
    for (mx::array& a : layer) {
      const mx::array& r = regions[i++];
      mx::Shape hi = to;
      for (int d = 0; d < 4; d++) hi[d] = to[d] + r.shape(d);
      a = mx::slice_update(a, r, to, hi);
      all.push_back(a);
    }
  regions.clear();
  mx::eval(all);
}

}  // namespace

void KvCache::MoveSlot(int32_t src, int32_t dst, int32_t len) {
  if (len <= 0 || src == dst) return;
  Relocate(parts_, {src, 0, 0, 0}, {src + 1, kvHeads_, len, 0}, {dst, 0, 0, 0});
}

void KvCache::Shift(int32_t n, int32_t from, int32_t to, int32_t len) {
  if (len <= 0 || n <= 0 || from == to) return;
  Relocate(parts_, {0, 0, from, 0}, {n, kvHeads_, from + len, 0}, {0, 0, to, 0});
}

}  // namespace dbmlx
