// One device's paged KV cache: per layer a K and a V pool of fixed-size
// blocks holding only this device's KV heads. Which sequence holds which
// block is the scheduler's (engine/block_pool.h); ranks see block tables.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/backend.h"

namespace gqa {

class KvCache {
 public:
  static absl::StatusOr<KvCache> Create(Backend* backend, int num_layers, const KvCacheLayout& layout);

  const KvCacheLayout& layout() const { return layout_; }
  void* k(int layer) const { return k_[layer].data(); }
  void* v(int layer) const { return v_[layer].data(); }
  int64_t BytesPerLayer() const { return 2 * layout_.Bytes(); }

 private:
  KvCacheLayout layout_;
  std::vector<DeviceBuffer> k_, v_;
};

}  // namespace gqa
