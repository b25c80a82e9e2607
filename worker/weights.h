// The weights one device holds, as typed structs of device views. Matrices
// stay in their stored dtype; only the small vectors (norm weights, biases)
// are converted to f32.
#pragma once

#include <atomic>

#include <vector>

#include "kernels/backend.h"
#include "worker/config.h"
#include "worker/safetensors.h"
#include "worker/shard_plan.h"

namespace gqa {

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
  MatrixView embedding;          // [vocab slice, hidden]: vocabulary-parallel
  const float* final_norm = nullptr;
  Linear lm_head;                // [vocab slice, hidden]
  std::vector<LayerWeights> layers;
  std::vector<DeviceBuffer> owned;  // device memory behind the views
  int64_t matrix_bytes = 0;         // bytes of matrices this rank reads per decode step
};

// Counts what LoadWeights has imported, across every rank that shares it
// (for progress lines while a large model loads).
struct WeightLoadCounter {
  std::atomic<int64_t> tensors{0};
  std::atomic<int64_t> bytes{0};  // as stored in the checkpoint
};

// Takes this rank's slices out of the checkpoint (never a full copy of a
// sharded matrix); every tensor is checked for presence, shape and dtype.
// The first rank also adds the biases of row-parallel projections.
absl::StatusOr<ModelWeights> LoadWeights(const ModelConfig& c, const Checkpoint& ckpt,
                                         const RankShard& shard, bool first_rank, Backend* backend,
                                         WeightLoadCounter* counter = nullptr);

}  // namespace gqa
