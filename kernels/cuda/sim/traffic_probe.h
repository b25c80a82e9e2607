// Global-memory traffic of the specialised attention kernels, counted by the
// interpreter (no GPU needed): bytes read against the fewest possible (Q, K,
// V and O once each) and 32-byte sectors per warp request against a
// perfectly coalesced access. Used by the traffic test and by
// `gqa-bench --mode kernel-traffic`.
#pragma once

#include <string>

#include "base/common.h"
#include "kernels/dtype.h"

namespace gqa::cuda_sim {

struct TrafficCase {
  bool prefill = false;  // false: every sequence decodes one token after `context`
  int batch = 1;
  int group_size = 8;    // query heads per KV head
  int num_kv_heads = 1;
  int head_dim = 128;
  int context = 1024;    // decode: tokens before the new one; prefill: the prompt
  int block_size = 16;
  DType kv_dtype = DType::kBF16;
};

struct TrafficReport {
  double kv_bytes = 0, kv_min_bytes = 0;        // loads from the K/V caches
  double total_bytes = 0, total_min_bytes = 0;  // every load and store
  double kv_sectors = 0, kv_ideal_sectors = 0;  // K/V loads
  int max_splits = 1;
  double kv_bytes_ratio() const { return kv_bytes / kv_min_bytes; }
  double total_bytes_ratio() const { return total_bytes / total_min_bytes; }
  double sectors_per_request_ratio() const { return kv_sectors / kv_ideal_sectors; }
};

absl::StatusOr<TrafficReport> MeasureAttentionTraffic(const TrafficCase& c);

}  // namespace gqa::cuda_sim
