// The CUDA kernels of the Backend ops. The same source compiles with nvcc
// and, under GQA_CUDA_SIM, with the host compiler against the SIMT
// interpreter, where the tests run it against the CPU backend.
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/ops.h"

namespace gqa::GQA_CUDA_NS {
namespace {

constexpr int kThreads = 256;

int ElementwiseBlocks(int64_t count) {
  const int64_t blocks = (count + kThreads - 1) / kThreads;
  return int(blocks < 4096 ? blocks : 4096);
}

__global__ void EmbeddingKernel(const void* table, int dtype, int64_t rows, int64_t cols, int64_t stride,
                                int64_t first_row, const int32_t* ids, float* out) {
  const int i = blockIdx.x;
  const int64_t row = int64_t(ids[i]) - first_row;
  float* o = out + int64_t(i) * cols;
  const bool inside = row >= 0 && row < rows;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    o[c] = inside ? LoadAsFloat(table, dtype, row * stride + c) : 0.0f;
  }
}

__global__ void RmsNormKernel(const float* x, const float* weight, int dim, float eps, float* out) {
  __shared__ float scratch[32];
  const float* xr = x + int64_t(blockIdx.x) * dim;
  float* o = out + int64_t(blockIdx.x) * dim;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
  ss = BlockSum(ss, scratch);
  const float inv = 1.0f / sqrtf(ss / float(dim) + eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = weight[i] * (xr[i] * inv);
}

__global__ void RopeKernel(float* x, int num_heads, int head_dim, int64_t token_stride, const int32_t* positions,
                           const float* inv_freq) {
  const int t = blockIdx.x;
  const int half = head_dim / 2;
  const float pos = float(positions[t]);
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    // f32 angle, as Hugging Face computes it.
    const float angle = inv_freq[i] * pos;
    const float c = cosf(angle), s = sinf(angle);
    for (int h = 0; h < num_heads; ++h) {
      float* v = x + int64_t(t) * token_stride + int64_t(h) * head_dim;
      const float a = v[i], b = v[i + half];
      v[i] = a * c - b * s;
      v[i + half] = b * c + a * s;
    }
  }
}

__global__ void SiluMulKernel(const float* gate, const float* up, int64_t count, float* out) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

__global__ void AddKernel(float* x, const float* y, int64_t count) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
    x[i] += y[i];
  }
}

__global__ void AddBiasKernel(float* y, const float* bias, int64_t count, int64_t cols) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
    y[i] += bias[i % cols];
  }
}

__global__ void RoundToKernel(const float* x, int64_t count, int bf16, uint16_t* out) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = bf16 ? FloatToBf16Bits(x[i]) : FloatToF16Bits(x[i]);
  }
}

__global__ void GatherRowsKernel(const float* x, const int32_t* rows, int dim, float* out) {
  const float* src = x + int64_t(rows[blockIdx.x]) * dim;
  float* dst = out + int64_t(blockIdx.x) * dim;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = src[i];
}

__global__ void WriteKvKernel(const float* k, const float* v, const int32_t* slot_mapping, KvCacheLayout layout,
                              void* k_cache, void* v_cache) {
  const int t = blockIdx.x;
  const int row = layout.num_kv_heads * layout.head_dim;
  const int64_t slot = slot_mapping[t];
  if (slot < 0) return;  // a padded token of a captured step: nothing to write
  for (int i = threadIdx.x; i < row; i += blockDim.x) {
    const int head = i / layout.head_dim, d = i % layout.head_dim;
    const int64_t off = layout.Offset(slot, head) + d;
    const float kv = k[int64_t(t) * row + i], vv = v[int64_t(t) * row + i];
    if (layout.dtype == DType::kBF16) {
      static_cast<uint16_t*>(k_cache)[off] = FloatToBf16Bits(kv);
      static_cast<uint16_t*>(v_cache)[off] = FloatToBf16Bits(vv);
    } else {
      static_cast<float*>(k_cache)[off] = kv;
      static_cast<float*>(v_cache)[off] = vv;
    }
  }
}

// ---- attention ----
constexpr int kAttnThreads = 128;
constexpr int kAttnTile = 16;       // keys per shared-memory tile
constexpr int kAttnMaxHeads = 8;    // query heads handled per pass over the context
constexpr int kAttnAccPerThread = kAttnMaxHeads * kMaxAttentionHeadDim / kAttnThreads;

// Block (t, g): token t, local KV head g. The query heads of this rank that
// read g are processed 8 at a time (one pass for every group of up to 8);
// per pass each visible K/V row is loaded once into shared memory and used by
// all of them, with an online softmax over tiles of kAttnTile keys.
__global__ void __launch_bounds__(kAttnThreads)
AttentionKernel(const float* q, AttentionMeta meta, KvCacheLayout layout, const void* k_cache,
                const void* v_cache, AttentionShape shape, float* out) {
  __shared__ float q_s[kAttnMaxHeads * kMaxAttentionHeadDim];
  __shared__ float k_s[kAttnTile * kMaxAttentionHeadDim];
  __shared__ float v_s[kAttnTile * kMaxAttentionHeadDim];
  __shared__ float p_s[kAttnMaxHeads * kAttnTile];
  __shared__ float m_s[kAttnMaxHeads], l_s[kAttnMaxHeads], c_s[kAttnMaxHeads];

  const int t = blockIdx.x, g = blockIdx.y, tid = threadIdx.x;
  const int hd = shape.head_dim, bs = layout.block_size;
  const int dtype = int(layout.dtype);
  const int pos = meta.token_pos[t];
  const int start = shape.sliding_window > 0 && pos - shape.sliding_window + 1 > 0 ? pos - shape.sliding_window + 1 : 0;
  const int32_t* table = meta.block_tables + int64_t(meta.token_seq[t]) * meta.max_blocks_per_seq;
  const int h_begin = shape.FirstQueryHead(g), h_end = shape.EndQueryHead(g);

  for (int h0 = h_begin; h0 < h_end; h0 += kAttnMaxHeads) {
    const int nh = h_end - h0 < kAttnMaxHeads ? h_end - h0 : kAttnMaxHeads;
    const float* q_rows = q + (int64_t(t) * shape.num_q_heads + h0) * hd;
    for (int i = tid; i < nh * hd; i += kAttnThreads) q_s[i] = q_rows[i] * shape.scale;
    if (tid < nh) {
      m_s[tid] = -INFINITY;
      l_s[tid] = 0.0f;
    }
    float acc[kAttnAccPerThread];
    for (int a = 0; a < kAttnAccPerThread; ++a) acc[a] = 0.0f;
    __syncthreads();

    for (int j0 = start; j0 <= pos; j0 += kAttnTile) {
      const int nj = pos + 1 - j0 < kAttnTile ? pos + 1 - j0 : kAttnTile;
      for (int i = tid; i < nj * hd; i += kAttnThreads) {
        const int j = i / hd, d = i % hd, p = j0 + j;
        const int64_t off = layout.Offset(int64_t(table[p / bs]) * bs + p % bs, g) + d;
        k_s[i] = LoadAsFloat(k_cache, dtype, off);
        v_s[i] = LoadAsFloat(v_cache, dtype, off);
      }
      __syncthreads();
      for (int i = tid; i < nh * kAttnTile; i += kAttnThreads) {
        const int h = i / kAttnTile, j = i % kAttnTile;
        float s = -INFINITY;
        if (j < nj) {
          s = 0.0f;
          for (int d = 0; d < hd; ++d) s += q_s[h * hd + d] * k_s[j * hd + d];
        }
        p_s[i] = s;
      }
      __syncthreads();
      if (tid < nh) {
        float mx = m_s[tid];
        for (int j = 0; j < nj; ++j) mx = fmaxf(mx, p_s[tid * kAttnTile + j]);
        const float corr = expf(m_s[tid] - mx);
        float sum = 0.0f;
        for (int j = 0; j < kAttnTile; ++j) {
          const float p = j < nj ? expf(p_s[tid * kAttnTile + j] - mx) : 0.0f;
          p_s[tid * kAttnTile + j] = p;
          sum += p;
        }
        l_s[tid] = l_s[tid] * corr + sum;
        m_s[tid] = mx;
        c_s[tid] = corr;
      }
      __syncthreads();
      for (int a = 0; a < kAttnAccPerThread; ++a) {
        const int i = tid + a * kAttnThreads;
        if (i >= nh * hd) break;
        const int h = i / hd, d = i % hd;
        float v = acc[a] * c_s[h];
        for (int j = 0; j < nj; ++j) v += p_s[h * kAttnTile + j] * v_s[j * hd + d];
        acc[a] = v;
      }
      __syncthreads();  // the next tile overwrites k_s, v_s and p_s
    }
    float* o = out + (int64_t(t) * shape.num_q_heads + h0) * hd;
    for (int a = 0; a < kAttnAccPerThread; ++a) {
      const int i = tid + a * kAttnThreads;
      if (i >= nh * hd) break;
      const float l = l_s[i / hd];
      o[i] = l > 0.0f ? acc[a] / l : 0.0f;  // l == 0: a padded token (position -1) sees no key
    }
    __syncthreads();  // the next pass overwrites q_s, m_s and l_s
  }
}

}  // namespace

cudaError_t LaunchEmbedding(const MatrixView& table, int64_t first_row, const int32_t* ids, int n, float* out,
                            cudaStream_t s) {
  return gqa_cuda::Launch(EmbeddingKernel, dim3(n), dim3(kThreads), s, table.data, int(table.dtype), table.rows,
                          table.cols, table.row_stride, first_row, ids, out);
}

cudaError_t LaunchRmsNorm(const float* x, const float* weight, int n, int dim, float eps, float* out,
                          cudaStream_t s) {
  return gqa_cuda::Launch(RmsNormKernel, dim3(n), dim3(kThreads), s, x, weight, dim, eps, out);
}

cudaError_t LaunchRope(float* x, int n, int num_heads, int head_dim, int64_t token_stride, const int32_t* positions,
                       const float* inv_freq, cudaStream_t s) {
  return gqa_cuda::Launch(RopeKernel, dim3(n), dim3(128), s, x, num_heads, head_dim, token_stride, positions,
                          inv_freq);
}

cudaError_t LaunchSiluMul(const float* gate, const float* up, int64_t count, float* out, cudaStream_t s) {
  return gqa_cuda::Launch(SiluMulKernel, dim3(ElementwiseBlocks(count)), dim3(kThreads), s, gate, up, count, out);
}

cudaError_t LaunchAdd(float* x, const float* y, int64_t count, cudaStream_t s) {
  return gqa_cuda::Launch(AddKernel, dim3(ElementwiseBlocks(count)), dim3(kThreads), s, x, y, count);
}

cudaError_t LaunchAddBias(float* y, const float* bias, int n, int64_t cols, cudaStream_t s) {
  const int64_t count = int64_t(n) * cols;
  return gqa_cuda::Launch(AddBiasKernel, dim3(ElementwiseBlocks(count)), dim3(kThreads), s, y, bias, count, cols);
}

cudaError_t LaunchRoundTo(const float* x, int64_t count, DType dtype, uint16_t* out, cudaStream_t s) {
  return gqa_cuda::Launch(RoundToKernel, dim3(ElementwiseBlocks(count)), dim3(kThreads), s, x, count,
                          dtype == DType::kBF16 ? 1 : 0, out);
}

cudaError_t LaunchGatherRows(const float* x, const int32_t* rows, int n, int dim, float* out, cudaStream_t s) {
  return gqa_cuda::Launch(GatherRowsKernel, dim3(n), dim3(kThreads), s, x, rows, dim, out);
}

cudaError_t LaunchWriteKv(const float* k, const float* v, const AttentionMeta& meta, const KvCacheLayout& layout,
                          void* k_cache, void* v_cache, cudaStream_t s) {
  return gqa_cuda::Launch(WriteKvKernel, dim3(meta.num_tokens), dim3(kThreads), s, k, v, meta.slot_mapping, layout,
                          k_cache, v_cache);
}

cudaError_t LaunchAttention(const float* q, const AttentionMeta& meta, const KvCacheLayout& layout,
                            const void* k_cache, const void* v_cache, const AttentionShape& shape, float* out,
                            cudaStream_t s) {
  if (shape.head_dim > kMaxAttentionHeadDim || shape.head_dim <= 0) return cudaErrorInvalidValue;
  return gqa_cuda::Launch(AttentionKernel, dim3(meta.num_tokens, shape.num_kv_heads), dim3(kAttnThreads), s, q, meta,
                          layout, k_cache, v_cache, shape, out);
}

}  // namespace gqa::GQA_CUDA_NS
