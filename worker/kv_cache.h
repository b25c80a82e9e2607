// One device's paged KV cache: per layer a K and a V pool of fixed-size
// blocks holding only this device's KV heads, and the host-side allocator of
// block ids shared by all layers.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/backend.h"

namespace gqa {

class BlockAllocator {
 public:
  explicit BlockAllocator(int num_blocks);
  int num_blocks() const { return num_blocks_; }
  int num_free() const { return static_cast<int>(free_.size()); }
  // A free block id, or -1 when none is left.
  int Allocate();
  void Free(int block);

 private:
  int num_blocks_;
  std::vector<int> free_;
  std::vector<bool> in_use_;
};

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
