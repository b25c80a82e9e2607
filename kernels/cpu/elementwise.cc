// Elementwise ops of the MLP: SiLU(gate) * up, eight at a time with AVX2.
#include <immintrin.h>

#include <cmath>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/simd.h"

namespace gqa::cpu {
namespace {

// SiLU(g) = g / (1 + e^-g), e^-g by Exp8 (simd.h).
GQA_AVX2 void SiluMulAvx2(const float* gate, const float* up, float* out, int64_t begin, int64_t end) {
  int64_t i = begin;
  const __m256 one = _mm256_set1_ps(1.0f);
  for (; i + 8 <= end; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 e = Exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_loadu_ps(up + i)));
  }
  for (; i < end; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

}  // namespace

void SiluMulRange(const float* gate, const float* up, float* out, int64_t begin, int64_t end) {
  if (HasAvx2()) return SiluMulAvx2(gate, up, out, begin, end);
  for (int64_t i = begin; i < end; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

}  // namespace gqa::cpu
