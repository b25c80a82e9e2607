// The host half of the specialised attention: grouping a step's tokens into
// decode items and prefill tiles, and splitting long decode contexts.
#include <algorithm>

#include "kernels/cuda/attention.h"

namespace gqa::GQA_CUDA_NS {

int DecodeBucket(int items) {
  int b = 1;
  while (b < items) b *= 2;
  return b;
}

int DecodeSplitCap(int bucket, int num_kv_heads, int target_blocks, int split_slots) {
  const int base_blocks = std::max(1, bucket * std::max(1, num_kv_heads));
  const int want = std::min(kMaxSplits, (target_blocks + base_blocks - 1) / base_blocks);
  return std::max(1, std::min(want, split_slots / std::max(1, bucket)));
}

AttentionSchedule MakeAttentionSchedule(const int32_t* token_seq, const int32_t* token_pos, int num_tokens,
                                const AttentionShape& shape, DType kv_dtype, int target_blocks,
                                int split_slots_available) {
  AttentionSchedule plan;
  int group = 0;
  for (int kv = 0; kv < shape.num_kv_heads; ++kv) group = std::max(group, shape.EndQueryHead(kv) - shape.FirstQueryHead(kv));
  const int tile_tokens = std::max(1, PrefillTileTokens(shape.head_dim, group, kv_dtype));
  for (int t = 0; t < num_tokens;) {
    // The run of adjacent tokens of this sequence at consecutive positions.
    int end = t + 1;
    while (end < num_tokens && token_seq[end] == token_seq[t] && token_pos[end] == token_pos[end - 1] + 1) ++end;
    if (end - t == 1) {
      plan.decode.push_back(DecodeItem{t, 1, -1});
    } else {
      for (int a = t; a < end; a += tile_tokens) {
        plan.prefill.push_back(PrefillTile{token_seq[t], a, std::min(tile_tokens, end - a), token_pos[a]});
      }
    }
    t = end;
  }
  // Split decode contexts while the grid is smaller than target_blocks.
  const int items = int(plan.decode.size());
  if (items == 0) return plan;
  // Gives item d DecodeSplits of its context under max_splits, with its
  // partial slots after those already taken (none when one split).
  const auto split = [&](DecodeItem& d, int max_splits) {
    const int splits = DecodeSplits(DecodeContext(token_pos[d.token], shape.sliding_window), max_splits);
    if (splits <= 1) return;
    d.num_splits = splits;
    d.partial_offset = plan.split_slots;
    plan.split_slots += splits;
    plan.max_splits = std::max(plan.max_splits, splits);
  };
  if (plan.prefill.empty()) {
    const int cap = DecodeSplitCap(DecodeBucket(items), shape.num_kv_heads, target_blocks, split_slots_available);
    for (DecodeItem& d : plan.decode) split(d, cap);
    return plan;
  }
  const int base_blocks = items * std::max(1, shape.num_kv_heads) + int(plan.prefill.size()) * shape.num_kv_heads;
  const int want = std::min(kMaxSplits, (target_blocks + base_blocks - 1) / std::max(1, base_blocks));
  if (want <= 1) return plan;
  for (DecodeItem& d : plan.decode) split(d, std::min(want, split_slots_available - plan.split_slots));
  return plan;
}

}  // namespace gqa::GQA_CUDA_NS
