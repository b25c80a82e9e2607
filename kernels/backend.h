// The op interface every device implements (CPU now, CUDA next). Ops are
// issued in order on the backend's stream and may run asynchronously; the
// only host-visible results are those of CopyToHost after Synchronize().
// Pointers passed to ops are device pointers owned by DeviceBuffers of the
// same backend. kernels/ knows nothing of models: shapes are explicit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "base/common.h"
#include "kernels/dtype.h"
#include "kernels/op_types.h"
#include "kernels/sampling_types.h"

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

// One step's attention plan: made by Backend::PlanAttention once per step,
// read by every layer's Attention. What it holds is the backend's own (work
// items on the CPU; decode items, prefill tiles and split buffers on a GPU);
// only the backend that made it may read it.
class AttentionPlan {
 public:
  virtual ~AttentionPlan() = default;
  int num_tokens() const { return num_tokens_; }
  const void* owner() const { return owner_; }

 protected:
  AttentionPlan(const void* owner, int num_tokens) : owner_(owner), num_tokens_(num_tokens) {}

 private:
  const void* owner_;
  int num_tokens_;
};

class GraphCapture;

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
  // The same for a weight matrix that only MatMul will read: the backend may
  // store it in a layout of its own (*device says which). Default: as
  // ImportHostMatrix.
  virtual absl::StatusOr<DeviceBuffer> ImportWeightMatrix(const MatrixView& host, MatrixView* device) {
    return ImportHostMatrix(host, device);
  }
  // The bytes a matrix of this backend reads from its first element, in
  // whatever layout ImportWeightMatrix chose. Default: row-major only.
  virtual size_t MatrixBytes(const MatrixView& m) const;
  virtual void CopyToDevice(void* dst, const void* src, size_t bytes) = 0;
  virtual void CopyToHost(void* dst, const void* src, size_t bytes) = 0;
  virtual void CopyDeviceToDevice(void* dst, const void* src, size_t bytes) = 0;
  // Joins `parts` f32 matrices of `rows` rows side by side: part p is the
  // packed [rows, col_begin[p + 1] - col_begin[p]] matrix at
  // src + p * part_stride and becomes columns [col_begin[p], col_begin[p + 1])
  // of dst, whose rows are col_begin[parts] wide. col_begin is host memory.
  // Default: one copy per part and row.
  virtual void ConcatColumns(const float* src, int parts, int64_t part_stride, const int64_t* col_begin, int rows,
                             float* dst);
  // Waits for every op issued so far; reports a device error if one occurred.
  virtual absl::Status Synchronize() = 0;
  // Binds the calling thread to this backend's device (CUDA: cudaSetDevice);
  // a rank calls it before issuing ops from a thread.
  virtual absl::Status MakeCurrent() { return absl::OkStatus(); }
  // The backend's stream (cudaStream_t on CUDA) for libraries that issue work
  // on it, such as NCCL; null where there is none.
  virtual void* NativeStream() const { return nullptr; }

  // ---- per-step state ----
  // The KV cache geometry this backend wants for the given sizes; the caller
  // allocates K and V of layout.Bytes() per layer. Default: token-major.
  virtual KvCacheLayout KvLayout(int num_blocks, int block_size, int num_kv_heads, int head_dim,
                                 DType dtype) const {
    return KvCacheLayout{num_blocks, block_size, num_kv_heads, head_dim, dtype, false};
  }
  // Sizes the attention work buffers once, for steps of up to max_tokens
  // tokens and max_seqs sequences of this shape.
  virtual absl::Status ReserveAttention(int max_tokens, int max_seqs, const AttentionShape& shape) {
    return absl::OkStatus();
  }
  // Plans this step's attention from the host copies of its token arrays
  // (which sequence, which position), once per step before any layer:
  // tokens are grouped into decode items (split along long contexts) and
  // prefill tiles, FlashInfer's plan/run. Every layer's Attention then takes
  // the plan. A GPU uploads it here, so a plan is valid until the backend's
  // next PlanAttention.
  virtual std::unique_ptr<AttentionPlan> PlanAttention(const int32_t* token_seq, const int32_t* token_pos,
                                                       int num_tokens, const AttentionShape& shape,
                                                       const KvCacheLayout& layout) = 0;
  // Uploads the host-side step metadata (count ints, built once per step and
  // read by every layer) to `device`. A GPU stages it through pinned memory
  // so that it is one asynchronous copy.
  virtual void UploadStep(const int32_t* host, size_t count, int32_t* device) {
    CopyToDevice(device, host, count * sizeof(int32_t));
  }

  // ---- optional capabilities ----
  // Recording and replaying steps (CUDA graphs), or null where the backend
  // runs ops at once (the CPU).
  virtual GraphCapture* graphs() { return nullptr; }

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
  // `plan` is this step's, from PlanAttention (or GraphCapture's
  // PlanPaddedDecode) of this backend.
  virtual void Attention(const float* q, const AttentionMeta& meta, const KvCacheLayout& layout,
                         const void* k_cache, const void* v_cache, const AttentionShape& shape,
                         const AttentionPlan& plan, float* out) = 0;
  // One token per row of logits [rows, vocab] (contiguous), chosen by the
  // rule of kernels/sampling_types.h: params [rows], the rows' penalty
  // entries, scratch [rows, vocab] floats, out [rows]. vocab <= 2^21.
  virtual void Sample(const float* logits, int rows, int vocab, const SamplingRow* params,
                      const PenaltyEntry* penalties, float* scratch, SampleOutput* out) = 0;
};

// Graphs of decode steps (CUDA graphs; see docs/cuda.md): the ops enqueued
// between BeginCapture and EndCapture are recorded, then replayed with the
// arguments of capture time. A capability of some backends
// (Backend::graphs()).
class GraphCapture {
 public:
  virtual ~GraphCapture() = default;
  // The attention plan of a decode-only step padded to `bucket` tokens, in
  // place of PlanAttention: launch shapes depend on the bucket only (item i
  // is token i; splits are derived on the device from the positions of
  // UploadStep), so that a graph captured with it stays valid for every step
  // of the bucket. Padded tokens have position -1 and slot -1: they attend to
  // nothing and write no K/V.
  virtual std::unique_ptr<AttentionPlan> PlanPaddedDecode(int bucket, const AttentionShape& shape,
                                                          const KvCacheLayout& layout) = 0;
  // From BeginCapture to EndCapture ops are recorded, not run (stream
  // capture). EndCapture returns the graph's id for ReplayGraph, or why the
  // capture failed (nothing ran either way; the error is not kept for the
  // next Synchronize).
  virtual absl::Status BeginCapture() = 0;
  virtual absl::StatusOr<int> EndCapture() = 0;
  // Enqueues the recorded ops again, with the arguments of capture time;
  // their errors surface in the next Synchronize.
  virtual void ReplayGraph(int graph) = 0;
  virtual void DropGraphs() = 0;
  // Runs fn in stream order: now, or, while capturing, at every replay.
  // The interpreter's in-process stand-in for NCCL goes through this, so
  // that its collectives are part of a replayed graph as NCCL's are on GPUs.
  virtual absl::Status InStreamOrder(const std::function<absl::Status()>& fn) = 0;
};

}  // namespace gqa
