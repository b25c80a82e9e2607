// GQA attention kernels over the head-major paged KV cache, planned once per
// step on the host (FlashInfer's plan/run): tokens are grouped into decode
// items (flash-decoding: one thread block per (item, KV head, context
// split), the group's query heads sharing every K/V tile, splits merged by
// log-sum-exp) and prefill tiles (a run of consecutive positions of one
// sequence, attended by the tiled kernel). Group size and head_dim are
// compile-time parameters: groups of up to 8 query heads per KV head,
// head_dim 64, 128 or 256; other shapes use the generic kernel of ops.cu.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/cuda/cuda_compat.h"
#include "kernels/op_types.h"

namespace gqa::GQA_CUDA_NS {

// One decode token. partial_offset: its first slot in the split buffers
// (num_splits consecutive slots), or -1 when num_splits is 1 and the kernel
// writes the output itself.
struct DecodeItem {
  int32_t token;
  int32_t num_splits;
  int32_t partial_offset;
};

// Up to PrefillTileTokens() consecutive tokens of one sequence whose
// positions are first_pos, first_pos + 1, ...
struct PrefillTile {
  int32_t seq;
  int32_t first_token;
  int32_t num_tokens;
  int32_t first_pos;
};

// Query rows (tokens x query heads of one KV head) of a prefill tile: its
// staged queries take 8 KiB of shared memory.
GQA_HOST_DEVICE constexpr int PrefillRows(int head_dim) { return 2048 / head_dim; }
// Group sizes are rounded up to 1, 2, 4 or 8 (the compiled variants).
GQA_HOST_DEVICE constexpr int GroupVariant(int group) { return group <= 1 ? 1 : group <= 2 ? 2 : group <= 4 ? 4 : 8; }
// With a bf16 cache and head_dim up to 128, prefill runs on tensor cores
// (mma.sync m16n8k16, bf16 inputs, f32 accumulation): 4 warps x 16 rows.
constexpr int kMmaPrefillRows = 64;
GQA_HOST_DEVICE constexpr bool TensorCorePrefill(int head_dim, DType kv_dtype) {
  return kv_dtype == DType::kBF16 && (head_dim == 64 || head_dim == 128);
}
GQA_HOST_DEVICE constexpr int PrefillTileTokens(int head_dim, int group, DType kv_dtype) {
  return (TensorCorePrefill(head_dim, kv_dtype) ? kMmaPrefillRows : PrefillRows(head_dim)) / GroupVariant(group);
}
constexpr int kMaxSplits = 16;     // context splits of one decode item
constexpr int kMinSplitKeys = 256; // fewest keys per split

// Keys a decode token at position pos attends to (0 for pos -1, a padded
// token of a captured step, which then does no work).
GQA_HOST_DEVICE constexpr int DecodeContext(int pos, int sliding_window) {
  return sliding_window > 0 && pos - sliding_window + 1 > 0 ? sliding_window : pos + 1;
}
// Splits of a decode context of ctx keys: one per kMinSplitKeys keys, at
// least 1 and at most max_splits. The host plan and the device (in a
// captured step) derive it alike, so both split a context the same way.
GQA_HOST_DEVICE constexpr int DecodeSplits(int ctx, int max_splits) {
  const int by_length = ctx / kMinSplitKeys;
  return by_length < 1 ? 1 : (by_length < max_splits ? by_length : max_splits);
}
// The batch bucket of a decode-only step of `items` tokens: the next power
// of two. Captured graphs exist per bucket (padded steps); eager steps use
// the same bucket for their split cap, so that both split alike.
int DecodeBucket(int items);
// Most splits per item of a decode-only step in `bucket`: enough blocks to
// reach target_blocks, at most kMaxSplits, and bucket x cap split slots at
// most split_slots (so that no item runs out of slots).
int DecodeSplitCap(int bucket, int num_kv_heads, int target_blocks, int split_slots);

// Whether the specialised kernels handle this shape (else the generic one).
bool SpecialisedAttention(const AttentionShape& shape, const KvCacheLayout& layout);

// The host side of a plan: what to launch for one step.
struct AttentionSchedule {
  std::vector<DecodeItem> decode;
  std::vector<PrefillTile> prefill;
  int max_splits = 1;
  int split_slots = 0;  // partial slots used
};

// Groups the step's tokens (host arrays) into items and tiles. Tokens of one
// sequence with consecutive positions, adjacent in the step, form prefill
// runs; lone tokens are decode items, split along their context while
// target_blocks (e.g. twice the multiprocessors) is not reached and
// split_slots_available lasts. A step of decode items only splits by
// DecodeSplitCap of its bucket, as a captured step of that bucket does.
AttentionSchedule MakeAttentionSchedule(const int32_t* token_seq, const int32_t* token_pos, int num_tokens,
                                const AttentionShape& shape, DType kv_dtype, int target_blocks,
                                int split_slots_available);

// Device arrays of a plan and the buffers its splits use. decode == null
// with num_decode > 0: a fixed-grid decode step (captured in a graph), item
// i is token i, its split count DecodeSplits(context, max_splits) is
// computed on the device from the step's positions, and its partial slots
// are i * max_splits onwards.
struct AttentionRun {
  const DecodeItem* decode = nullptr;
  int num_decode = 0;
  int max_splits = 1;
  const PrefillTile* prefill = nullptr;
  int num_prefill = 0;
  float* partial_out = nullptr;  // [slots, num_q_heads, head_dim]
  float* partial_lse = nullptr;  // [slots, num_q_heads]
};

cudaError_t LaunchPlannedAttention(const float* q, const AttentionMeta& meta, const KvCacheLayout& layout,
                                   const void* k_cache, const void* v_cache, const AttentionShape& shape,
                                   const AttentionRun& run, float* out, cudaStream_t s);

}  // namespace gqa::GQA_CUDA_NS
