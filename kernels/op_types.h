// Plain shapes and views shared by the op interface and the kernels that
// implement it (CUDA sources include this under nvcc, so no absl here).
#pragma once

#include <cstddef>
#include <cstdint>

// Methods that kernels call as well as host code.
#if defined(__CUDACC__)
#define GQA_HOST_DEVICE __host__ __device__
#else
#define GQA_HOST_DEVICE
#endif

namespace gqa {

// Element types of weights and activations as stored.
enum class DType : uint8_t { kF32, kF16, kBF16 };

GQA_HOST_DEVICE constexpr size_t DTypeSize(DType t) { return t == DType::kF32 ? 4 : 2; }

// How a backend stores an imported weight matrix. Row-major is the stored
// checkpoint order and the only layout the op interface's callers create;
// the CPU backend may repack bf16 weights at import into panels of 16 rows
// interleaved column by column (kernels/cpu/panels.cc, for AVX2) or column
// pair by column pair (kernels/cpu/pair_panels.cc, for AVX-512 BF16), which
// only its own kernels read.
enum class MatrixLayout : uint8_t { kRowMajor, kBf16Panels16, kBf16PairPanels16 };

// A [rows, cols] matrix in device memory. Row-major: rows are row_stride
// elements apart, so that a column slice of a stored matrix is a view.
struct MatrixView {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_stride = 0;
  MatrixLayout layout = MatrixLayout::kRowMajor;

  MatrixView RowSlice(int64_t begin, int64_t count) const;
  MatrixView ColSlice(int64_t begin, int64_t count) const;
};

// Geometry of one layer's paged KV cache: K and V each hold num_blocks blocks
// of block_size tokens x num_kv_heads x head_dim elements of `dtype` (f32 or bf16).
//
// The backend chooses the order of a block's elements: token-major
// [block_size, num_kv_heads, head_dim] (the CPU's: one token's heads are
// adjacent) or head-major [num_kv_heads, block_size, head_dim] (CUDA's: one
// head's tokens are adjacent, so a tile of keys is one contiguous read).
struct KvCacheLayout {
  int num_blocks = 0;
  int block_size = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  DType dtype = DType::kF32;
  bool head_major = false;

  // Element offset of (slot, kv head, dimension 0); slot = block * block_size + offset.
  GQA_HOST_DEVICE int64_t Offset(int64_t slot, int head) const {
    if (!head_major) return (slot * num_kv_heads + head) * head_dim;
    const int64_t block = slot / block_size, in_block = slot % block_size;
    return ((block * num_kv_heads + head) * block_size + in_block) * head_dim;
  }

  GQA_HOST_DEVICE int64_t ElementsPerBlock() const { return int64_t{block_size} * num_kv_heads * head_dim; }
  GQA_HOST_DEVICE int64_t Elements() const { return ElementsPerBlock() * num_blocks; }
  GQA_HOST_DEVICE int64_t Bytes() const { return Elements() * int64_t(DTypeSize(dtype)); }
};

// Per-step metadata in device memory, built once per step and read by every
// layer. Token t belongs to sequence token_seq[t], sits at absolute position
// token_pos[t], attends to positions [max(0, pos - window + 1), pos] of its
// sequence, and its K/V go to cache slot slot_mapping[t]
// (= block * block_size + offset).
struct AttentionMeta {
  int num_tokens = 0;
  const int32_t* token_seq = nullptr;     // [num_tokens]
  const int32_t* token_pos = nullptr;     // [num_tokens]
  const int32_t* slot_mapping = nullptr;  // [num_tokens]
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq]
  int max_blocks_per_seq = 0;
};

// Heads of one device. Its query heads are a contiguous slice of the model's
// and its KV heads exactly those they read: local query head h is global head
// q_head_offset + h of a slice that starts inside KV group 0, and reads local
// KV head (q_head_offset + h) / group_size. q_head_offset < group_size.
struct AttentionShape {
  int num_q_heads = 0;     // query heads held by this device
  int num_kv_heads = 0;    // KV heads held by this device
  int group_size = 1;      // query heads per KV head in the model (H / K)
  int q_head_offset = 0;   // position of local query head 0 inside its group
  int head_dim = 0;
  float scale = 1.0f;      // usually head_dim^-0.5
  int sliding_window = 0;  // 0: full causal attention

  // Local query heads [begin, end) that read local KV head g.
  GQA_HOST_DEVICE int FirstQueryHead(int g) const {
    const int h = g * group_size - q_head_offset;
    return h > 0 ? h : 0;
  }
  GQA_HOST_DEVICE int EndQueryHead(int g) const {
    const int h = (g + 1) * group_size - q_head_offset;
    return h < num_q_heads ? h : num_q_heads;
  }
};

}  // namespace gqa
