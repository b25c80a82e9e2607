// Target attributes of the CPU kernels' vector paths, and pieces shared by
// the kernels (matmul.cc, gemm.cc, panels.cc, pair_panels.cc; the exp of
// elementwise.cc, attention.cc and sampling.cc). Code under
// GQA_AVX2 runs only where HasAvx2() holds, under GQA_AVX512 only where
// IsaAvailable(Isa::kAvx512) does, under GQA_AVX512BF16 only where
// IsaAvailable(Isa::kAvx512Bf16) does.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "base/common.h"
#include "kernels/dtype.h"

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

// e^x for x in [-88, 88] (clamped outside): x = n ln2 + r, |r| <= ln2 / 2,
// e^r by Cephes' degree-6 polynomial, 2^n through the exponent bits; within
// 2 ulp of the correctly rounded value.
GQA_AVX2 inline __m256 Exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-88.0f)), _mm256_set1_ps(88.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i scale = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(scale));
}

// exp(d) for d <= 0 (a value minus the maximum it was taken from), eight
// lanes, by Exp8; below e^-87.3 (f32's normal range) it is 0, and a NaN
// stays NaN.
GQA_AVX2 inline __m256 ExpNonPositive8(__m256 d) {
  const __m256 e = _mm256_andnot_ps(_mm256_cmp_ps(d, _mm256_set1_ps(-87.33654f), _CMP_LT_OQ), Exp8(d));
  return _mm256_blendv_ps(e, d, _mm256_cmp_ps(d, d, _CMP_UNORD_Q));
}

}  // namespace gqa::cpu
