#include "worker/kv_cache.h"

#include "absl/strings/str_cat.h"

namespace gqa {

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
