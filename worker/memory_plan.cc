#include "worker/memory_plan.h"

#include <algorithm>
#include <limits>

namespace gqa {

int64_t KvBytesPerToken(const ModelConfig& c, int64_t kv_heads, int kv_elem_bytes) {
  return 2 * int64_t{c.num_layers} * kv_heads * c.head_dim * kv_elem_bytes;
}

absl::StatusOr<MemoryPlan> PlanMemory(const ModelConfig& c, int tp, int weight_elem_bytes, int kv_elem_bytes) {
  MemoryPlan mp;
  ASSIGN_OR_RETURN(mp.plan, MakeShardPlan(c.num_q_heads, c.num_kv_heads, tp, c.intermediate_size, c.vocab_size));
  const int64_t h = c.hidden_size, hd = c.head_dim, w = weight_elem_bytes, f32 = 4;
  for (const RankShard& s : mp.plan.ranks) {
    RankMemory r;
    r.shard = s;
    const int64_t q = int64_t{s.num_q_heads()} * hd, kv = int64_t{s.num_kv_heads()} * hd, mlp = s.mlp_size();
    int64_t layer = (q + 2 * kv) * h * w   // q, k, v projections
                    + h * q * w            // o projection (its input columns)
                    + 3 * mlp * h * w      // gate, up, down
                    + 2 * h * f32;         // the two norms
    if (c.attention_bias) layer += (q + 2 * kv) * f32;
    if (c.o_proj_bias) layer += h * f32;
    if (c.mlp_bias) layer += (2 * mlp + h) * f32;
    const int64_t vocab = int64_t{s.vocab_size()} * h * w;
    r.weight_bytes = c.num_layers * layer + vocab * (c.tie_word_embeddings ? 1 : 2) + h * f32;
    r.kv_bytes_per_token = KvBytesPerToken(c, s.num_kv_heads(), kv_elem_bytes);
    mp.ranks.push_back(r);
  }
  return mp;
}

Capacity PlanCapacity(const MemoryPlan& plan, int64_t device_memory, double utilization, int64_t max_model_len) {
  int64_t tokens = std::numeric_limits<int64_t>::max();
  const int64_t usable = static_cast<int64_t>(static_cast<long double>(device_memory) * utilization);
  for (const RankMemory& r : plan.ranks) {
    const int64_t room = std::max<int64_t>(0, usable - r.weight_bytes);
    if (r.kv_bytes_per_token > 0) tokens = std::min(tokens, room / r.kv_bytes_per_token);
  }
  Capacity cap;
  cap.kv_tokens = tokens;
  cap.max_sequences = max_model_len > 0 ? tokens / max_model_len : 0;
  return cap;
}

}  // namespace gqa
