// The op interface every device implements (CPU now, CUDA next). Ops are
// issued in order on the backend's stream and may run asynchronously; the
// only host-visible results are those of CopyToHost after Synchronize().
// Pointers passed to ops are device pointers owned by DeviceBuffers of the
// same backend. kernels/ knows nothing of models: shapes are explicit.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "kernels/common.h"

namespace gqa {

// Memory owned by one backend: host memory on the CPU, device memory on a GPU.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(void* data, size_t bytes, std::function<void(void*)> release)
      : data_(data), bytes_(bytes), release_(std::move(release)) {}
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { Reset(); }

  void Reset();
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  template <typename T>
  T* as() const { return static_cast<T*>(data_); }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  std::function<void(void*)> release_;
};

// A row-major [rows, cols] matrix in device memory whose rows are row_stride
// elements apart, so that a column slice of a stored matrix is a view.
struct MatrixView {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_stride = 0;

  MatrixView RowSlice(int64_t begin, int64_t count) const;
  MatrixView ColSlice(int64_t begin, int64_t count) const;
};

// Geometry of one layer's paged KV cache. K and V each have the layout
// [num_blocks, block_size, num_kv_heads, head_dim] of `dtype` (f32 or bf16).
struct KvCacheLayout {
  int num_blocks = 0;
  int block_size = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  DType dtype = DType::kF32;

  int64_t ElementsPerBlock() const { return int64_t{block_size} * num_kv_heads * head_dim; }
  int64_t Elements() const { return ElementsPerBlock() * num_blocks; }
  int64_t Bytes() const { return Elements() * int64_t(DTypeSize(dtype)); }
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
  int FirstQueryHead(int g) const { return std::max(0, g * group_size - q_head_offset); }
  int EndQueryHead(int g) const { return std::min(num_q_heads, (g + 1) * group_size - q_head_offset); }
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string Name() const = 0;

  // ---- memory ----
  virtual absl::StatusOr<DeviceBuffer> Allocate(size_t bytes) = 0;
  // Makes host bytes (e.g. an mmapped checkpoint slice that outlives the
  // returned buffer) usable as device memory: a zero-copy view on the CPU,
  // an upload on a GPU.
  virtual absl::StatusOr<DeviceBuffer> ImportHost(const void* host, size_t bytes) = 0;
  // The same for a (possibly strided) host matrix; *device receives the view
  // of the imported copy (on the CPU: the host view itself).
  virtual absl::StatusOr<DeviceBuffer> ImportHostMatrix(const MatrixView& host,
                                                        MatrixView* device) = 0;
  virtual void CopyToDevice(void* dst, const void* src, size_t bytes) = 0;
  virtual void CopyToHost(void* dst, const void* src, size_t bytes) = 0;
  virtual void CopyDeviceToDevice(void* dst, const void* src, size_t bytes) = 0;
  // Waits for every op issued so far; reports a device error if one occurred.
  virtual absl::Status Synchronize() = 0;

  // ---- ops (f32 activations; weights in their stored dtype) ----
  // out[i, :] = table[ids[i] - first_row, :] when that row is in the table
  // (a vocabulary slice starting at first_row), else zeros.
  virtual void Embedding(const MatrixView& table, int64_t first_row, const int32_t* ids, int n,
                         float* out) = 0;
  // out[i, :] = x[i, :] / sqrt(mean(x[i, :]^2) + eps) * weight
  virtual void RmsNorm(const float* x, const float* weight, int n, int dim, float eps,
                       float* out) = 0;
  // y[n, w.rows] = x[n, w.cols] * w^T (+ bias[w.rows]); f32 accumulation.
  virtual void MatMul(const float* x, int n, const MatrixView& w, const float* bias,
                      float* y) = 0;
  // In-place rotary embedding, Hugging Face rotate-half convention, on
  // x[t * token_stride + h * head_dim + i] for h < num_heads.
  // inv_freq: [head_dim / 2] device floats.
  virtual void Rope(float* x, int n, int num_heads, int head_dim, int64_t token_stride,
                    const int32_t* positions, const float* inv_freq) = 0;
  // out = silu(gate) * up, elementwise over count values.
  virtual void SiluMul(const float* gate, const float* up, int64_t count, float* out) = 0;
  // x += y over count values.
  virtual void Add(float* x, const float* y, int64_t count) = 0;
  // out[i, :] = x[rows[i], :]
  virtual void GatherRows(const float* x, const int32_t* rows, int n, int dim, float* out) = 0;
  // Stores k, v ([n, num_kv_heads * head_dim]) into the cache slots of meta.
  virtual void WriteKv(const float* k, const float* v, const AttentionMeta& meta,
                       const KvCacheLayout& layout, void* k_cache, void* v_cache) = 0;
  // out[t, h * head_dim + i] = softmax(q_t,h . K / scale) V over the visible
  // positions of t's sequence, read through the block table. Each K/V row is
  // read once for all query heads of its group.
  virtual void Attention(const float* q, const AttentionMeta& meta, const KvCacheLayout& layout,
                         const void* k_cache, const void* v_cache, const AttentionShape& shape,
                         float* out) = 0;
};

}  // namespace gqa
