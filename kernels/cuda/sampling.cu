// Kernels beside the logits: vocabulary slices joined into full rows, and
// sampling with one thread block per row. Sampling finds the top-k and
// top-p cuts without sorting, by radix selection over the 64-bit Keys of
// kernels/sampling_types.h (8 bits a pass, block-wide histograms of counts
// and integer masses), then draws by a block-wide scan in id order. Integer
// sums make it agree token for token with the CPU op.
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/sampling.h"

namespace gqa::GQA_CUDA_NS {
namespace {

using u64 = unsigned long long;
using sampling::Key;
using sampling::KeyToken;

constexpr int kMaxSampleThreads = 512;
constexpr int kBins = 256;

__device__ __forceinline__ u64 MaxU64(u64 a, u64 b) { return a > b ? a : b; }

__device__ __forceinline__ u64 WarpMaxU64(u64 v) {
  for (int o = 16; o > 0; o >>= 1) v = MaxU64(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ u64 WarpSumU64(u64 v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Max / sum over the block; every thread gets it. scratch: 32 u64 of shared memory.
__device__ u64 BlockMaxU64(u64 v, u64* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = WarpMaxU64(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  return WarpMaxU64(lane < warps ? scratch[lane] : 0);
}

__device__ u64 BlockSumU64(u64 v, u64* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = WarpSumU64(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  return WarpSumU64(lane < warps ? scratch[lane] : 0);
}

// Exclusive prefix sum over the threads of the block in thread order; *total
// receives the sum of all.
__device__ u64 BlockExclusiveScanU64(u64 v, u64* scratch, u64* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  u64 inc = v;
  for (int o = 1; o < 32; o <<= 1) {
    const u64 n = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += n;
  }
  __syncthreads();
  if (lane == 31) scratch[warp] = inc;
  __syncthreads();
  const u64 warp_total = lane < warps ? scratch[lane] : 0;
  u64 warps_inc = warp_total;
  for (int o = 1; o < 32; o <<= 1) {
    const u64 n = __shfl_up_sync(0xffffffffu, warps_inc, o);
    if (lane >= o) warps_inc += n;
  }
  const u64 before = __shfl_sync(0xffffffffu, warps_inc - warp_total, warp);
  *total = __shfl_sync(0xffffffffu, warps_inc, 31);
  return before + inc - v;
}

// Shared memory of one row's selection.
struct SelectShared {
  unsigned int count[kBins];
  u64 weight[kBins];
  u64 prefix, above;
  int done;
};

// The mass of token i under the row's temperature and min-p.
__device__ __forceinline__ u64 MassOf(const float* y, int i, float max, const SamplingRow& p) {
  const u64 w = sampling::Mass(sampling::Scaled(y[i], max, p.temperature));
  return sampling::PassesMinP(w, p.min_p) ? w : 0;
}

// The largest cut K such that the tokens with floor <= Key and K <= Key
// weigh at least `target`, where a token weighs 1 (top-k) or its mass
// (top-p). Digits are resolved from the top; once the tokens at or above the
// cut are determined, the lower digits stay 0 (the same set of tokens).
__device__ u64 RadixSelect(const float* y, int vocab, float max, const SamplingRow& p, bool by_mass, u64 target,
                           u64 floor, SelectShared* s) {
  const int tid = threadIdx.x;
  u64 prefix = 0, above = 0;
  for (int shift = 56; shift >= 0; shift -= 8) {
    const u64 high = shift == 56 ? 0 : ~0ull << (shift + 8);
    for (int b = tid; b < kBins; b += blockDim.x) {
      s->count[b] = 0;
      s->weight[b] = 0;
    }
    __syncthreads();
    for (int i = tid; i < vocab; i += blockDim.x) {
      const u64 key = Key(y[i], i);
      if (key < floor || (key & high) != prefix) continue;
      const int bin = int((key >> shift) & (kBins - 1));
      atomicAdd(&s->count[bin], 1u);
      const u64 w = by_mass ? MassOf(y, i, max, p) : 1ull;
      if (w != 0) atomicAdd(&s->weight[bin], w);
    }
    __syncthreads();
    if (tid == 0) {
      int b = kBins - 1;
      u64 acc = above;
      for (; b > 0; --b) {
        if (acc + s->weight[b] >= target) break;
        acc += s->weight[b];
      }
      s->prefix = prefix | (u64(b) << shift);
      s->above = acc;
      s->done = s->count[b] == 1 || (!by_mass && acc + s->weight[b] == target);
    }
    __syncthreads();
    prefix = s->prefix;
    above = s->above;
    // Every thread reads s before the next pass's first barrier, after which
    // thread 0 may write it again.
    if (s->done) break;
  }
  // An early cut can lie below the floor; the tokens it keeps do not.
  return prefix > floor ? prefix : floor;
}

// The token drawn from penalized logits y (temperature > 0); top is the
// largest Key of y.
__device__ int Draw(const float* y, int vocab, const SamplingRow& p, u64 top, SelectShared* sel, u64* red,
                    int* chosen) {
  const int tid = threadIdx.x;
  const float max = sampling::KeyLogit(top);
  const int argmax = KeyToken(top);
  u64 cut = 0;
  if (p.top_k > 0 && p.top_k < vocab) cut = RadixSelect(y, vocab, max, p, false, u64(p.top_k), 0, sel);
  if (p.top_p < 1.0f) {
    u64 mine = 0;
    for (int i = tid; i < vocab; i += blockDim.x) {
      if (Key(y[i], i) >= cut) mine += MassOf(y, i, max, p);
    }
    const u64 total = BlockSumU64(mine, red);
    if (total == 0) return argmax;
    cut = RadixSelect(y, vocab, max, p, true, sampling::TopPTarget(total, p.top_p), cut, sel);
  }
  // Each thread sums a contiguous chunk; the thread whose chunk holds the
  // draw walks it.
  const int chunk = (vocab + blockDim.x - 1) / blockDim.x;
  const int begin = tid * chunk < vocab ? tid * chunk : vocab;
  const int end = begin + chunk < vocab ? begin + chunk : vocab;
  u64 mine = 0;
  for (int i = begin; i < end; ++i) {
    if (Key(y[i], i) >= cut) mine += MassOf(y, i, max, p);
  }
  if (tid == 0) *chosen = argmax;
  u64 total = 0;
  const u64 before = BlockExclusiveScanU64(mine, red, &total);
  if (total == 0) return argmax;
  const u64 target = sampling::DrawTarget(total, p.uniform);
  if (before <= target && target < before + mine) {
    u64 cum = before;
    for (int i = begin; i < end; ++i) {
      if (Key(y[i], i) < cut) continue;
      cum += MassOf(y, i, max, p);
      if (cum > target) {
        *chosen = i;
        break;
      }
    }
  }
  __syncthreads();
  return *chosen;
}

// Block `row`: copies the row into scratch and applies the penalties there,
// chooses, then reports the logprobs of the raw logits.
__global__ void __launch_bounds__(kMaxSampleThreads)
SampleKernel(const float* logits, int vocab, const SamplingRow* params, const PenaltyEntry* penalties,
             float* scratch, SampleOutput* out) {
  __shared__ SelectShared sel;
  __shared__ u64 red[32];
  __shared__ float red_f[32];
  __shared__ int chosen_s;
  const int row = blockIdx.x, tid = threadIdx.x;
  const SamplingRow p = params[row];
  const float* x = logits + int64_t(row) * vocab;
  float* y = scratch + int64_t(row) * vocab;

  u64 raw_top = 0;
  for (int i = tid; i < vocab; i += blockDim.x) {
    y[i] = x[i];
    raw_top = MaxU64(raw_top, Key(x[i], i));
  }
  raw_top = BlockMaxU64(raw_top, red);
  const float raw_max = sampling::KeyLogit(raw_top);
  float sum = 0.0f;
  for (int i = tid; i < vocab; i += blockDim.x) sum += expf(x[i] - raw_max);
  const float log_z = raw_max + logf(BlockSum(sum, red_f));
  // Context tokens are distinct: no two threads write the same logit.
  for (int e = p.penalty_begin + tid; e < p.penalty_end; e += blockDim.x) {
    const PenaltyEntry pe = penalties[e];
    if (pe.token >= 0 && pe.token < vocab) y[pe.token] = sampling::Penalize(x[pe.token], pe, p);
  }
  __syncthreads();

  u64 top = 0;
  for (int i = tid; i < vocab; i += blockDim.x) top = MaxU64(top, Key(y[i], i));
  top = BlockMaxU64(top, red);
  const int token = p.temperature > 0.0f ? Draw(y, vocab, p, top, &sel, red, &chosen_s) : KeyToken(top);

  SampleOutput* o = out + row;
  int n = p.num_top_logprobs < kMaxTopLogprobs ? p.num_top_logprobs : kMaxTopLogprobs;
  n = n < 0 ? 0 : (n > vocab ? vocab : n);
  if (tid == 0) {
    o->token = token;
    o->logprob = x[token] - log_z;
    o->num_top = n;
  }
  // Top-n by repeated block-wide maxima below the previous pick.
  u64 prev = ~0ull;
  for (int j = 0; j < n; ++j) {
    u64 best = 0;
    for (int i = tid; i < vocab; i += blockDim.x) {
      const u64 key = Key(x[i], i);
      if (key < prev) best = MaxU64(best, key);
    }
    best = BlockMaxU64(best, red);
    if (tid == 0) {
      const int t = KeyToken(best);
      o->top_tokens[j] = t;
      o->top_logprobs[j] = x[t] - log_z;
    }
    prev = best;
  }
}

struct ColumnStarts {
  int64_t begin[kMaxConcatParts + 1];
};

// Block (row, part) copies that part's piece of the row.
__global__ void ConcatColumnsKernel(const float* src, int64_t part_stride, ColumnStarts cols, int64_t width,
                                    float* dst) {
  const int row = blockIdx.x, part = blockIdx.y;
  const int64_t begin = cols.begin[part], n = cols.begin[part + 1] - begin;
  const float* s = src + part * part_stride + row * n;
  float* d = dst + row * width + begin;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) d[j] = s[j];
}

}  // namespace

cudaError_t LaunchConcatColumns(const float* src, int parts, int64_t part_stride, const int64_t* col_begin, int rows,
                                float* dst, cudaStream_t s) {
  if (parts < 1 || parts > kMaxConcatParts) return cudaErrorInvalidValue;
  ColumnStarts cols{};
  for (int p = 0; p <= parts; ++p) cols.begin[p] = col_begin[p];
  return gqa_cuda::Launch(ConcatColumnsKernel, dim3(rows, parts), dim3(256), s, src, part_stride, cols,
                          col_begin[parts], dst);
}

cudaError_t LaunchSample(const float* logits, int rows, int vocab, const SamplingRow* params,
                         const PenaltyEntry* penalties, float* scratch, SampleOutput* out, cudaStream_t s) {
  if (vocab < 1 || vocab > (1 << sampling::kMaxVocabBits)) return cudaErrorInvalidValue;
  // About 8 tokens a thread for small vocabularies, in whole warps.
  int threads = ((vocab + 7) / 8 + 31) / 32 * 32;
  threads = threads < 32 ? 32 : (threads > kMaxSampleThreads ? kMaxSampleThreads : threads);
  return gqa_cuda::Launch(SampleKernel, dim3(rows), dim3(threads), s, logits, vocab, params, penalties, scratch, out);
}

}  // namespace gqa::GQA_CUDA_NS
