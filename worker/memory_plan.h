// Memory per rank for a model and TP degree (weights and KV cache per token),
// and how many sequences fit in a device's memory: what gqa-plan prints.
#pragma once

#include <vector>

#include "worker/config.h"
#include "worker/shard_plan.h"

namespace gqa {

struct RankMemory {
  RankShard shard;
  int64_t weight_bytes = 0;        // matrices in the weight dtype; norms and biases in f32
  int64_t kv_bytes_per_token = 0;  // K and V of every layer for this rank's KV heads
};

struct MemoryPlan {
  ShardPlan plan;
  std::vector<RankMemory> ranks;
};

// K and V of every layer for `kv_heads` KV heads, per token: the one formula
// of KV bytes (gqa-plan, and the KV cache the engine builder sizes).
int64_t KvBytesPerToken(const ModelConfig& c, int64_t kv_heads, int kv_elem_bytes);

absl::StatusOr<MemoryPlan> PlanMemory(const ModelConfig& c, int tp, int weight_elem_bytes, int kv_elem_bytes);

struct Capacity {
  int64_t kv_tokens = 0;      // tokens whose KV fits on the tightest rank
  int64_t max_sequences = 0;  // sequences of max_model_len that fit
};

// Each rank may use utilization * device_memory bytes; after its weights,
// the rest holds KV. The rank with the least room decides.
Capacity PlanCapacity(const MemoryPlan& plan, int64_t device_memory, double utilization, int64_t max_model_len);

}  // namespace gqa
