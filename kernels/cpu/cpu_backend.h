// The CPU implementation of Backend: host memory, ops run synchronously,
// split across a thread pool.
#pragma once

#include <memory>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/thread_pool.h"

namespace gqa {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int num_threads);
  std::string Name() const override;
  int num_threads() const { return pool_.size(); }
  ThreadPool* pool() { return &pool_; }

  absl::StatusOr<DeviceBuffer> Allocate(size_t bytes) override;
  absl::StatusOr<DeviceBuffer> ImportHost(const void* host, size_t bytes) override;
  absl::StatusOr<DeviceBuffer> ImportHostMatrix(const MatrixView& host, MatrixView* device) override;
  // bf16 weights are repacked into 16-row panels (kernels/cpu/panels.cc,
  // pair_panels.cc) in the layout cpu::WeightPanelLayout names for the
  // active ISA, unless GQA_CPU_WEIGHT_PANELS=0 or
  // set_weight_panels(false); anything else stays a view of the host memory.
  absl::StatusOr<DeviceBuffer> ImportWeightMatrix(const MatrixView& host, MatrixView* device) override;
  size_t MatrixBytes(const MatrixView& m) const override;
  void set_weight_panels(bool on) { weight_panels_ = on; }
  bool weight_panels() const { return weight_panels_; }
  // Products over bf16 pair panels on AVX-512 BF16 round the activations to
  // one bf16, as llama.cpp does, unless set_bf16_activations(false) or
  // GQA_CPU_BF16_ACTIVATIONS=0: then they stay f32 and the weights are
  // widened for FMAs (twice the arithmetic; logits about 1.5e-2 relative
  // closer to an f32 computation). Other ISAs compute in f32 either way.
  void set_bf16_activations(bool on) { bf16_activations_ = on; }
  bool bf16_activations() const { return bf16_activations_; }
  // What products over pair panels do with activations here: rounded
  // (AVX-512 BF16, as set above) or f32.
  cpu::Bf16Activations PairActivations() const;
  void CopyToDevice(void* dst, const void* src, size_t bytes) override;
  void CopyToHost(void* dst, const void* src, size_t bytes) override;
  void CopyDeviceToDevice(void* dst, const void* src, size_t bytes) override;
  absl::Status Synchronize() override { return absl::OkStatus(); }

  // Work items over (query tile, KV head, context chunk), made once per step.
  std::unique_ptr<AttentionPlan> PlanAttention(const int32_t* token_seq, const int32_t* token_pos, int num_tokens,
                                               const AttentionShape& shape, const KvCacheLayout& layout) override;

  void Embedding(const MatrixView& table, int64_t first_row, const int32_t* ids, int n,
                 float* out) override;
  void RmsNorm(const float* x, const float* weight, int n, int dim, float eps,
               float* out) override;
  void MatMul(const float* x, int n, const MatrixView& w, const float* bias, float* y) override;
  void Rope(float* x, int n, int num_heads, int head_dim, int64_t token_stride,
            const int32_t* positions, const float* inv_freq) override;
  void SiluMul(const float* gate, const float* up, int64_t count, float* out) override;
  void Add(float* x, const float* y, int64_t count) override;
  void GatherRows(const float* x, const int32_t* rows, int n, int dim, float* out) override;
  void WriteKv(const float* k, const float* v, const AttentionMeta& meta,
               const KvCacheLayout& layout, void* k_cache, void* v_cache) override;
  void Attention(const float* q, const AttentionMeta& meta, const KvCacheLayout& layout,
                 const void* k_cache, const void* v_cache, const AttentionShape& shape, const AttentionPlan& plan,
                 float* out) override;
  void Sample(const float* logits, int rows, int vocab, const SamplingRow* params, const PenaltyEntry* penalties,
              float* scratch, SampleOutput* out) override;

 private:
  // Runs fn over [0, count) on the pool when the work is worth splitting.
  void ParallelIfLarge(int64_t count, int64_t work, const ThreadPool::RangeFn& fn);

  ThreadPool pool_;
  bool weight_panels_ = true;
  bool bf16_activations_ = true;
  std::vector<float> packed_x_;            // MatMul's packed activations (several tokens)
  std::vector<uint32_t> packed_pairs_;     // MatMul's packed activations for pair panels
  std::vector<float> attention_partials_;  // Attention's per-chunk partial results
};

}  // namespace gqa
