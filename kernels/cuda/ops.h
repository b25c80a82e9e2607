// Host-side launchers of the CUDA kernels (ops.cu). Pointers are device
// pointers; every launcher returns the launch's error (cudaSuccess or what
// cudaGetLastError reported). Shapes follow the Backend ops of the same name.
#pragma once

#include <cstdint>

#include "kernels/cuda/cuda_compat.h"
#include "kernels/op_types.h"

namespace gqa::GQA_CUDA_NS {

cudaError_t LaunchEmbedding(const MatrixView& table, int64_t first_row, const int32_t* ids, int n, float* out,
                            cudaStream_t s);
cudaError_t LaunchRmsNorm(const float* x, const float* weight, int n, int dim, float eps, float* out,
                          cudaStream_t s);
cudaError_t LaunchRope(float* x, int n, int num_heads, int head_dim, int64_t token_stride, const int32_t* positions,
                       const float* inv_freq, cudaStream_t s);
cudaError_t LaunchSiluMul(const float* gate, const float* up, int64_t count, float* out, cudaStream_t s);
cudaError_t LaunchAdd(float* x, const float* y, int64_t count, cudaStream_t s);
// y[t, c] += bias[c] for t < n, c < cols.
cudaError_t LaunchAddBias(float* y, const float* bias, int n, int64_t cols, cudaStream_t s);
cudaError_t LaunchGatherRows(const float* x, const int32_t* rows, int n, int dim, float* out, cudaStream_t s);
// out[i] = x[i] rounded to `dtype` (f16 or bf16) bits, for GEMM inputs.
cudaError_t LaunchRoundTo(const float* x, int64_t count, DType dtype, uint16_t* out, cudaStream_t s);
cudaError_t LaunchWriteKv(const float* k, const float* v, const AttentionMeta& meta, const KvCacheLayout& layout,
                          void* k_cache, void* v_cache, cudaStream_t s);
// Paged GQA attention: one thread block per (token, KV head) that loads each
// K/V tile once into shared memory for all query heads of the group.
// Needs head_dim <= kMaxAttentionHeadDim.
constexpr int kMaxAttentionHeadDim = 256;
cudaError_t LaunchAttention(const float* q, const AttentionMeta& meta, const KvCacheLayout& layout,
                            const void* k_cache, const void* v_cache, const AttentionShape& shape, float* out,
                            cudaStream_t s);

}  // namespace gqa::GQA_CUDA_NS
