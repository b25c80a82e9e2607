// How one model is split over T tensor-parallel ranks: computed once, a
// plain value. Query heads go to ranks in contiguous ranges; each rank holds
// exactly the KV heads its query heads read, so a KV head is replicated only
// when groups are fewer than ranks or a range straddles two groups.
#pragma once

#include <string>
#include <vector>

#include "base/common.h"

namespace gqa {

struct RankShard {
  int q_head_begin = 0, q_head_end = 0;    // query heads [begin, end)
  int kv_head_begin = 0, kv_head_end = 0;  // KV heads those query heads read
  int mlp_begin = 0, mlp_end = 0;          // intermediate columns
  int vocab_begin = 0, vocab_end = 0;      // vocabulary rows (embedding and LM head)

  int num_q_heads() const { return q_head_end - q_head_begin; }
  int num_kv_heads() const { return kv_head_end - kv_head_begin; }
  int mlp_size() const { return mlp_end - mlp_begin; }
  int vocab_size() const { return vocab_end - vocab_begin; }
};

struct ShardPlan {
  int num_q_heads = 0;   // H
  int num_kv_heads = 0;  // K
  int num_ranks = 0;     // T
  std::vector<RankShard> ranks;

  int group_size() const { return num_q_heads / num_kv_heads; }
  // Sum over ranks of KV heads held.
  int KvHeadsHeld() const;
  // KvHeadsHeld() / K: 1 when KV heads are partitioned.
  double KvReplicationFactor() const { return double(KvHeadsHeld()) / num_kv_heads; }
};

// Query heads are split as evenly as possible (every rank gets floor(H/T) or
// ceil(H/T)); among those splits the one holding the fewest KV heads in total
// is chosen. MLP and vocabulary are split evenly. Errors name H, K and T (or
// the size that cannot be split).
absl::StatusOr<ShardPlan> MakeShardPlan(int num_q_heads, int num_kv_heads, int num_ranks,
                                        int intermediate_size, int vocab_size);

// KV heads of group-size g touched by query heads [begin, end).
int KvHeadsTouched(int begin, int end, int group_size);

}  // namespace gqa
