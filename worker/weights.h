// The weights one device holds, as typed structs of device views. Matrices
// stay in their stored dtype; only the small vectors (norm weights, biases)
// are converted to f32.
#pragma once

#include <vector>

#include "kernels/backend.h"
#include "worker/config.h"
#include "worker/safetensors.h"

namespace gqa {

// The slice of every layer one rank holds; the whole model at TP=1.
struct ShardRanges {
  int q_head_begin = 0, q_head_end = 0;    // query heads [begin, end)
  int kv_head_begin = 0, kv_head_end = 0;  // KV heads read by those query heads
  int mlp_begin = 0, mlp_end = 0;          // intermediate (MLP) columns
  int vocab_begin = 0, vocab_end = 0;      // LM-head rows
  bool first_rank = true;                  // adds the row-parallel biases (o_proj, down_proj)

  static ShardRanges Full(const ModelConfig& c);
  int num_q_heads() const { return q_head_end - q_head_begin; }
  int num_kv_heads() const { return kv_head_end - kv_head_begin; }
};

struct Linear {
  MatrixView w;                   // [out, in] on the device
  const float* bias = nullptr;    // [out] f32 on the device, or null
};

struct LayerWeights {
  const float* input_norm = nullptr;  // [hidden]
  const float* post_norm = nullptr;   // [hidden]
  Linear q, k, v;                     // column-parallel by heads
  Linear o;                           // row-parallel: input columns of this rank's heads
  Linear gate, up;                    // column-parallel by MLP rows
  Linear down;                        // row-parallel: input columns of this rank's MLP slice
};

struct ModelWeights {
  MatrixView embedding;          // [vocab, hidden], replicated
  const float* final_norm = nullptr;
  Linear lm_head;                // [vocab slice, hidden]
  std::vector<LayerWeights> layers;
  std::vector<DeviceBuffer> owned;  // device memory behind the views
  int64_t matrix_bytes = 0;         // bytes of matrices this rank reads per decode step
};

// Takes this rank's slices out of the checkpoint (never a full copy of a
// sharded matrix); every tensor is checked for presence, shape and dtype.
absl::StatusOr<ModelWeights> LoadWeights(const ModelConfig& c, const Checkpoint& ckpt,
                                         const ShardRanges& shard, Backend* backend);

}  // namespace gqa
