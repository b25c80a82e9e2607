// MHA -> GQA checkpoint conversion (Ainslie et al. 2023): the key and value
// projection heads of each group are mean-pooled (or the group's first head
// kept, or re-initialised at random), and config.json gets the new
// num_key_value_heads. Every other tensor and file is copied unchanged.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/common.h"

namespace gqa {

enum class KvConversion { kMean, kFirst, kRandom };
absl::StatusOr<KvConversion> ParseKvConversion(const std::string& name);  // mean, first, random

struct ConvertOptions {
  std::string in_dir, out_dir;
  int kv_heads = 0;  // G
  KvConversion method = KvConversion::kMean;
  uint64_t seed = 0;  // for kRandom
};

struct ConvertReport {
  int q_heads = 0, kv_heads_before = 0, kv_heads_after = 0;
  int element_bytes = 0;  // of the k_proj weights (the default KV-cache element)
  int64_t kv_bytes_per_token_before = 0, kv_bytes_per_token_after = 0;
  int tensors_rewritten = 0, tensors_copied = 0;
};

// The G that a checkpoint with kv_heads key/value heads can be converted to:
// the divisors of kv_heads (of the query heads for an MHA checkpoint).
std::vector<int> ValidKvHeadChoices(int kv_heads);

// Rewrites one k_proj/v_proj tensor, [kv_heads * head_dim, ...] of
// dtype_name (F32, F16, BF16 or F64), to [g * head_dim, ...]. `name` keys
// the random stream of kRandom.
absl::StatusOr<std::vector<uint8_t>> ConvertKvTensor(const std::string& name, const std::string& dtype_name,
                                                     const std::vector<int64_t>& shape, const void* data,
                                                     int kv_heads, int head_dim, int g, KvConversion method,
                                                     uint64_t seed);

// Converts in_dir into out_dir (created; must not be in_dir), keeping the
// shard layout, and copies the other files (tokenizer, ...).
absl::StatusOr<ConvertReport> ConvertCheckpoint(const ConvertOptions& options);

}  // namespace gqa
