// Target attributes of the CPU kernels' vector paths, and pieces shared by
// the matrix kernels (matmul.cc, gemm.cc, panels.cc, pair_panels.cc). Code under
// GQA_AVX2 runs only where HasAvx2() holds, under GQA_AVX512 only where
// IsaAvailable(Isa::kAvx512) does, under GQA_AVX512BF16 only where
// IsaAvailable(Isa::kAvx512Bf16) does.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "kernels/common.h"

#define GQA_AVX2 __attribute__((target("avx2,fma,f16c")))
#define GQA_AVX512 __attribute__((target("avx512f")))
#define GQA_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

namespace gqa::cpu {

// Token tile i when n tokens are cut into as few tiles of at most
// max_tokens as possible, of even sizes (16 tokens by 6: 6 + 5 + 5, not
// 6 + 6 + 4), since a small tile has fewer multiply-adds per weight load.
struct TokenTile {
  int first, count;
};
inline int64_t NumTokenTiles(int n, int max_tokens) { return (n + max_tokens - 1) / max_tokens; }
inline TokenTile TokenTileOf(int n, int64_t i, int max_tokens) {
  const int tiles = int(NumTokenTiles(n, max_tokens)), base = n / tiles, extra = n % tiles;
  return {int(i) * base + std::min(int(i), extra), base + (i < extra ? 1 : 0)};
}

// Eight stored elements (f32, f16 or bf16) from base + i, as f32.
template <DType D>
GQA_AVX2 inline __m256 Load8(const void* base, int64_t i) {
  if constexpr (D == DType::kF32) {
    return _mm256_loadu_ps(static_cast<const float*>(base) + i);
  } else if constexpr (D == DType::kF16) {
    return _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + i)));
  } else {
    const __m128i h =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

}  // namespace gqa::cpu
