#include "worker/kv_cache.h"

#include "absl/strings/str_cat.h"

namespace gqa {

BlockAllocator::BlockAllocator(int num_blocks) : num_blocks_(num_blocks), in_use_(num_blocks, false) {
  free_.reserve(num_blocks);
  // Hand out low ids first.
  for (int b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

int BlockAllocator::Allocate() {
  if (free_.empty()) return -1;
  const int b = free_.back();
  free_.pop_back();
  in_use_[b] = true;
  return b;
}

void BlockAllocator::Free(int block) {
  GQA_CHECK(block >= 0 && block < num_blocks_ && in_use_[block], "freeing a block that is not in use");
  in_use_[block] = false;
  free_.push_back(block);
}

absl::StatusOr<KvCache> KvCache::Create(Backend* backend, int num_layers, const KvCacheLayout& layout) {
  if (layout.num_blocks <= 0 || layout.block_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache needs at least one block of at least one token (got ",
                                                   layout.num_blocks, " blocks of ", layout.block_size, ")"));
  }
  KvCache c;
  c.layout_ = layout;
  if (layout.dtype != DType::kF32 && layout.dtype != DType::kBF16) {
    return absl::InvalidArgumentError("the KV cache dtype must be f32 or bf16");
  }
  const size_t bytes = size_t(layout.Bytes());
  for (int l = 0; l < num_layers; ++l) {
    ASSIGN_OR_RETURN(DeviceBuffer k, backend->Allocate(bytes));
    ASSIGN_OR_RETURN(DeviceBuffer v, backend->Allocate(bytes));
    c.k_.push_back(std::move(k));
    c.v_.push_back(std::move(v));
  }
  return c;
}

}  // namespace gqa
