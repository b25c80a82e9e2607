// Device-side helpers shared by the kernels: element conversions done on the
// bits (the same code under nvcc and the interpreter) and warp/block reductions.
#pragma once

#include <cstdint>

#include "kernels/cuda/cuda_compat.h"

namespace gqa::GQA_CUDA_NS {

__device__ __forceinline__ float Bf16BitsToFloat(uint16_t h) { return __uint_as_float(uint32_t(h) << 16); }

// Round to nearest even; NaN stays NaN.
__device__ __forceinline__ uint16_t FloatToBf16Bits(float f) {
  const uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

__device__ __forceinline__ float F16BitsToFloat(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  if (exp == 0) {
    // Zero or subnormal: man * 2^-24.
    const float v = float(man) * (1.0f / 16777216.0f);
    return __uint_as_float(__float_as_uint(v) | sign);
  }
  if (exp == 31) return __uint_as_float(sign | 0x7f800000u | (man << 13));
  return __uint_as_float(sign | ((exp + 112u) << 23) | (man << 13));
}

// Round to nearest even, with subnormals and overflow to infinity.
__device__ __forceinline__ uint16_t FloatToF16Bits(float f) {
  const uint32_t u = __float_as_uint(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u);  // NaN
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds past 65504: infinity
  if (a < 0x38800000u) {
    // Subnormal or zero in f16: value / 2^-24 rounded to nearest even.
    const float scaled = __uint_as_float(a) * 16777216.0f;
    const float r = rintf(scaled);
    return uint16_t(sign | uint32_t(r));
  }
  const uint32_t rounded = a + 0xfffu + ((a >> 13) & 1u);
  return uint16_t(sign | ((rounded - 0x38000000u) >> 13));
}

__device__ __forceinline__ float LoadAsFloat(const void* p, int dtype_code, int64_t i) {
  // dtype_code: 0 f32, 1 f16, 2 bf16 (DType's values).
  if (dtype_code == 0) return static_cast<const float*>(p)[i];
  const uint16_t h = static_cast<const uint16_t*>(p)[i];
  return dtype_code == 2 ? Bf16BitsToFloat(h) : F16BitsToFloat(h);
}

__device__ __forceinline__ float WarpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over a block of blockDim.x threads (a multiple of 32, at most 1024);
// every thread gets the result. `scratch` is 32 floats of shared memory.
__device__ __forceinline__ float BlockSum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  v = WarpSum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = lane < warps ? scratch[lane] : 0.0f;
  return WarpSum(total);
}

}  // namespace gqa::GQA_CUDA_NS

// ---- global memory through helpers the interpreter counts (traffic tests) ----
namespace gqa::GQA_CUDA_NS {

template <typename T>
__device__ __forceinline__ T GlobalLoadAt(const T* p, const char* file, int line) {
#if defined(GQA_CUDA_SIM)
  gqa_sim::CountAccess(p, sizeof(T), false, file, line);
#endif
  return *p;
}

template <typename T>
__device__ __forceinline__ void GlobalStoreAt(T* p, T v, const char* file, int line) {
#if defined(GQA_CUDA_SIM)
  gqa_sim::CountAccess(p, sizeof(T), true, file, line);
#endif
  *p = v;
}

// 16 bytes from global to shared memory without passing through registers
// (cp.async, sm_80+); both addresses 16-byte aligned. Completes at
// AsyncWait, after AsyncCommit closed its group.
__device__ __forceinline__ void AsyncCopy16At(void* smem, const void* gmem, const char* file, int line) {
#if defined(GQA_CUDA_SIM)
  gqa_sim::CountAccess(gmem, 16, false, file, line);
  gqa_sim::AsyncCopy(smem, gmem, 16);
#else
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem) : "memory");
#endif
}

__device__ __forceinline__ void AsyncCommit() {
#if defined(GQA_CUDA_SIM)
  gqa_sim::AsyncCommit();
#else
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

template <int kKeepGroups>
__device__ __forceinline__ void AsyncWait() {
#if defined(GQA_CUDA_SIM)
  gqa_sim::AsyncWait(kKeepGroups);
#else
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kKeepGroups) : "memory");
#endif
}

}  // namespace gqa::GQA_CUDA_NS

#define GQA_LD(p) GlobalLoadAt((p), __FILE__, __LINE__)
#define GQA_ST(p, v) GlobalStoreAt((p), (v), __FILE__, __LINE__)
#define GQA_CP_ASYNC16(smem, gmem) AsyncCopy16At((smem), (gmem), __FILE__, __LINE__)

// ---- tensor cores: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 ----
namespace gqa::GQA_CUDA_NS {

// Two bf16 in one register, `lo` in the low half (the element of the smaller
// index, as the PTX ISA packs .bf16x2).
__device__ __forceinline__ uint32_t PackBf16x2(float lo, float hi) {
  return uint32_t(FloatToBf16Bits(lo)) | (uint32_t(FloatToBf16Bits(hi)) << 16);
}

// D = A (16x16, row-major) * B (16x8, column-major) + C, f32 accumulation,
// for the whole warp; every lane passes its fragments in the PTX ISA's
// layout (g = lane / 4, t = lane % 4):
//   a[0] = A[g][2t..2t+1]    a[1] = A[g+8][2t..2t+1]
//   a[2] = A[g][2t+8..2t+9]  a[3] = A[g+8][2t+8..2t+9]
//   b[0] = B[2t..2t+1][g]    b[1] = B[2t+8..2t+9][g]
//   c, d = {X[g][2t], X[g][2t+1], X[g+8][2t], X[g+8][2t+1]}
// The interpreter exchanges the fragments across the 32 lanes and computes
// each lane's part of D from the whole matrices, so a kernel that builds its
// fragments in another layout gets a wrong result here as on a GPU.
__device__ __forceinline__ void MmaBf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                        const float (&c)[4]) {
#if defined(GQA_CUDA_SIM)
  struct Fragments {
    uint32_t a[4], b[2];
  };
  Fragments mine{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}};
  Fragments all[32];
  gqa_sim::WarpGather(0xffffffffu, &mine, sizeof(mine), all);
  float A[16][16], B[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane & 3;
    const Fragments& f = all[lane];
    const int rows[4] = {g, g + 8, g, g + 8}, cols[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
    for (int r = 0; r < 4; ++r) {
      A[rows[r]][cols[r]] = Bf16BitsToFloat(uint16_t(f.a[r] & 0xffffu));
      A[rows[r]][cols[r] + 1] = Bf16BitsToFloat(uint16_t(f.a[r] >> 16));
    }
    for (int r = 0; r < 2; ++r) {
      B[2 * t + 8 * r][g] = Bf16BitsToFloat(uint16_t(f.b[r] & 0xffffu));
      B[2 * t + 8 * r + 1][g] = Bf16BitsToFloat(uint16_t(f.b[r] >> 16));
    }
  }
  const int g = gqa_sim::LaneId() / 4, t = gqa_sim::LaneId() % 4;
  const int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
  for (int i = 0; i < 4; ++i) {
    float acc = c[i];
    for (int k = 0; k < 16; ++k) acc = fmaf(A[rows[i]][k], B[k][cols[i]], acc);
    d[i] = acc;
  }
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
#endif
}

}  // namespace gqa::GQA_CUDA_NS
