// The Qwen3 / Llama forward pass over an mlx-community checkpoint, and the KV cache it attends over.
// Everything here runs on the model's engine thread (MLX evaluates on the thread owning its stream).
// No N-API here.
#pragma once

#include <mlx/mlx.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace dbmlx {

namespace mx = mlx::core;

// config.json, as the TypeScript wrapper (src/mlx.ts) reads it: mlx-lm's ModelArgs for qwen3 / llama.
struct ModelConfig {
  std::string architecture;  // "qwen3" | "llama"
  int32_t hidden = 0;
  int32_t layers = 0;
  int32_t intermediate = 0;
  int32_t heads = 0;
  int32_t kvHeads = 0;
  int32_t headDim = 0;
  int32_t vocab = 0;
  float rmsEps = 1e-6f;
  float ropeTheta = 10000.0f;
  bool ropeTraditional = false;
  // rope_scaling: "default" | "linear" (ropeFactor) | "llama3" (all four).
  std::string ropeType = "default";
  float ropeFactor = 1.0f;
  float ropeLowFreqFactor = 1.0f;
  float ropeHighFreqFactor = 4.0f;
  float ropeOriginalMaxPositions = 8192.0f;
  bool tieWordEmbeddings = false;
  int32_t maxPositionEmbeddings = 0;
  std::vector<int32_t> eosTokens;
  std::vector<std::string> files;  // the *.safetensors to load
};

// y = x W^T (+ b): a plain weight [out, in], or mlx-lm's affine quantization (uint32 codes plus
// .scales / .biases per group); bits and group size are read off the shapes.
struct Linear {
  std::optional<mx::array> w, scales, biases, bias;
  int32_t bits = 0, groupSize = 0;  // 0: not quantized
  mx::array operator()(const mx::array& x) const;
  // Rows of the matrix as embeddings (quantized: the gathered rows dequantized).
  mx::array Rows(const mx::array& ids, mx::Dtype dtype) const;
};

struct Layer {
  Linear q, k, v, o, gate, up, down;
  std::optional<mx::array> qNorm, kNorm;  // qwen3
  mx::array inputNorm{0.0f}, postNorm{0.0f};
};

// The attention of one layer: given queries [B, Hq, L, D] and the new keys / values [B, Hkv, L, D]
// (RoPE applied), store them and return the attention output [B, Hq, L, D].
using AttendFn = std::function<mx::array(int32_t layer, const mx::array& q, const mx::array& k, const mx::array& v)>;

class Transformer {
 public:
  // Loads, converts (float parts to the compute dtype: the checkpoint's own when absent) and
  // evaluates every weight. Throws on a missing or misshapen tensor.
  Transformer(ModelConfig config, std::optional<mx::Dtype> computeDtype);

  const ModelConfig& config() const { return config_; }
  mx::Dtype dtype() const { return dtype_; }
  int64_t bytes() const { return bytes_; }
  float scale() const { return scale_; }
  // The projections' quantization bits (0: not quantized).
  int32_t bits() const { return layers_.empty() ? 0 : layers_[0].q.bits; }

  // tokens [B, L] int32; ropeOffset: int32 [B] (each row's first position) or a scalar. Returns the
  // final normed hidden states [B, L, hidden]; attend handles the cache of every layer.
  // lastPositionOnly: every position's keys and values still reach attend, but the final layer
  // computes its queries, attention output and MLP for the last position alone, and the result is
  // [B, 1, hidden]. A prompt's last chunk needs no more for its first token (llama.cpp prunes its
  // graph the same way; mlx-lm gets it from lazy evaluation by running the last token alone); on a
  // model of few layers the final layer is a large share of the prefill.
  mx::array Hidden(const mx::array& tokens, const mx::array& ropeOffset, const AttendFn& attend,
                   bool lastPositionOnly = false) const;
  // Logits [B, L, vocab] (float32) of hidden states.
  mx::array Logits(const mx::array& hidden) const;

 private:
  mx::array Rope(const mx::array& x, const mx::array& offset) const;

  ModelConfig config_;
  mx::Dtype dtype_;
  float scale_;
  Linear embed_, lmHead_;
  std::vector<Layer> layers_;
  mx::array norm_{0.0f};
  std::optional<mx::array> ropeFreqs_;  // llama3 scaling
  int64_t bytes_ = 0;
};

// K/V of `slots` sequences per layer, preallocated to `capacity` positions each: [slots, Hkv,
// capacity, D] (plain), or with kvBits 4/8 the codes, scales and biases of mx::quantize along D (as
// mlx-lm's QuantizedKVCache). Writes update in place (MLX donates the buffer to slice_update).
class KvCache {
 public:
  KvCache(int32_t layers, int32_t slots, int32_t kvHeads, int32_t headDim, int32_t capacity, int32_t kvBits,
          mx::Dtype dtype);

  int32_t capacity() const { return capacity_; }
  int32_t bits() const { return bits_; }
  int64_t bytes() const;

  // k, v [n, Hkv, L, D] into slots [0, n), positions [pos, pos + L).
  void Write(int32_t layer, int32_t pos, const mx::array& k, const mx::array& v);
  // q [n, Hq, Lq, D] against slots [0, n), positions [0, len): a boolean mask broadcastable to
  // [n, 1, Lq, len], or causal (the queries are the last Lq positions).
  mx::array Attend(int32_t layer, const mx::array& q, int32_t len, const std::optional<mx::array>& mask, bool causal,
                   float scale) const;

  // Positions [from, from + len) of slot `src` in `other` into positions [to, to + len) of slot `dst`.
  void CopySlot(const KvCache& other, int32_t src, int32_t dst, int32_t from, int32_t to, int32_t len);
  // Slot `src` positions [0, len) into slot `dst` (same cache).
  void MoveSlot(int32_t src, int32_t dst, int32_t len);
  // Positions [from, from + len) of slots [0, n) to [to, to + len).
  void Shift(int32_t n, int32_t from, int32_t to, int32_t len);

  std::vector<mx::array> Arrays() const;

 private:
  // Per layer: {k, v}, or {kq, ks, kb, vq, vs, vb} quantized.
  std::vector<std::vector<mx::array>> parts_;
  int32_t slots_, kvHeads_, headDim_, capacity_, bits_, groupSize_;
};

}  // namespace dbmlx
