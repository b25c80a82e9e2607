// AVX2 pieces shared by the CPU matrix kernels (matmul.cc, gemm.cc).
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "kernels/common.h"

#define GQA_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace gqa::cpu {

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
