// Matrix-vector and small matrix-matrix products with weights in their stored
// dtype (f32, f16, bf16) and f32 accumulation. Weights are converted 8 at a
// time in registers; nothing is expanded in memory. On CPUs with AVX-512
// BF16 (vdpbf16ps), bf16 weights are multiplied 32 at a time with the
// activations split once per call into two bf16 parts, hi + lo, whose sum
// is within 2^-16 of the f32 value: two instructions per 32 weights, and
// the numerics of f32 activations (rounding them to a single bf16, as
// llama.cpp does, moves logits by ~1% and changes greedy tokens of the
// golden models).
#include <cpuid.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/simd.h"

namespace gqa::cpu {
namespace {

GQA_AVX2 inline float HorizontalSum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  __m128 sh = _mm_movehdup_ps(lo);
  lo = _mm_add_ps(lo, sh);
  sh = _mm_movehl_ps(sh, lo);
  lo = _mm_add_ss(lo, sh);
  return _mm_cvtss_f32(lo);
}

// One tile: R weight rows times T tokens, full reduction over cols.
template <DType D, int R, int T>
GQA_AVX2 void Tile(const float* x, int64_t x_stride, const MatrixView& w, int64_t row,
                   const float* bias, float* y, int64_t y_stride) {
  const int64_t cols = w.cols;
  const int64_t esize = int64_t(DTypeSize(D));
  const char* wbase = static_cast<const char*>(w.data) + row * w.row_stride * esize;
  const void* wrow[R];
  for (int r = 0; r < R; ++r) wrow[r] = wbase + r * w.row_stride * esize;
  __m256 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= cols; k += 8) {
    __m256 xv[T];
    for (int t = 0; t < T; ++t) xv[t] = _mm256_loadu_ps(x + t * x_stride + k);
    for (int r = 0; r < R; ++r) {
      const __m256 wv = Load8<D>(wrow[r], k);
      for (int t = 0; t < T; ++t) acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      float s = HorizontalSum(acc[r][t]);
      for (int64_t kk = k; kk < cols; ++kk) s += LoadElement(wrow[r], D, kk) * x[t * x_stride + kk];
      if (bias != nullptr) s += bias[row + r];
      y[t * y_stride + row + r] = s;
    }
  }
}

template <DType D>
GQA_AVX2 void MatMulRowsAvx2(const float* x, int n, const MatrixView& w, const float* bias,
                             float* y, int64_t row_begin, int64_t row_end) {
  const int64_t xs = w.cols, ys = w.rows;
  if (n == 1) {
    // Decode: bandwidth bound; eight independent row streams keep the FMA
    // latency hidden.
    int64_t r = row_begin;
    for (; r + 8 <= row_end; r += 8) Tile<D, 8, 1>(x, xs, w, r, bias, y, ys);
    for (; r < row_end; ++r) Tile<D, 1, 1>(x, xs, w, r, bias, y, ys);
    return;
  }
  // Several tokens: reuse each converted weight vector for up to 3 tokens,
  // walking tokens inside a row tile so the tile's weights stay in L1/L2.
  // Triples, and the remainder as pairs (n = 3k + 1 as 3(k - 1) + 2 + 2).
  const int triples = n % 3 == 1 && n >= 4 ? n / 3 - 1 : n / 3;
  int64_t r = row_begin;
  for (; r + 4 <= row_end; r += 4) {
    int t = 0;
    for (int i = 0; i < triples; ++i, t += 3) Tile<D, 4, 3>(x + t * xs, xs, w, r, bias, y + t * ys, ys);
    for (; t + 2 <= n; t += 2) Tile<D, 4, 2>(x + t * xs, xs, w, r, bias, y + t * ys, ys);
    for (; t < n; ++t) Tile<D, 4, 1>(x + t * xs, xs, w, r, bias, y + t * ys, ys);
  }
  for (; r < row_end; ++r) {
    int t = 0;
    for (; t + 3 <= n; t += 3) Tile<D, 1, 3>(x + t * xs, xs, w, r, bias, y + t * ys, ys);
    for (; t < n; ++t) Tile<D, 1, 1>(x + t * xs, xs, w, r, bias, y + t * ys, ys);
  }
}

void MatMulRowsScalar(const float* x, int n, const MatrixView& w, const float* bias, float* y,
                      int64_t row_begin, int64_t row_end) {
  const int64_t esize = int64_t(DTypeSize(w.dtype));
  for (int64_t r = row_begin; r < row_end; ++r) {
    const char* row = static_cast<const char*>(w.data) + r * w.row_stride * esize;
    for (int t = 0; t < n; ++t) {
      const float* xt = x + t * w.cols;
      float s = 0.0f;
      for (int64_t k = 0; k < w.cols; ++k) s += LoadElement(row, w.dtype, k) * xt[k];
      if (bias != nullptr) s += bias[r];
      y[t * w.rows + r] = s;
    }
  }
}

// R weight rows times T tokens of split activations (hi, then lo, each
// x_stride wide), 32 columns per step; the last partial step is masked.
template <int R, int T>
GQA_AVX512BF16 void TileBf16Dot(const uint16_t* xb, int64_t x_stride, const MatrixView& w, int64_t row,
                                const float* bias, float* y, int64_t y_stride) {
  const int64_t cols = w.cols;
  const uint16_t* wrow[R];
  for (int r = 0; r < R; ++r) wrow[r] = static_cast<const uint16_t*>(w.data) + (row + r) * w.row_stride;
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  for (int64_t k = 0; k < cols; k += 32) {
    const __mmask32 m = cols - k >= 32 ? ~__mmask32(0) : __mmask32((uint64_t{1} << (cols - k)) - 1);
    __m512bh hi[T], lo[T];
    for (int t = 0; t < T; ++t) {
      hi[t] = (__m512bh)_mm512_maskz_loadu_epi16(m, xb + 2 * t * x_stride + k);
      lo[t] = (__m512bh)_mm512_maskz_loadu_epi16(m, xb + (2 * t + 1) * x_stride + k);
    }
    for (int r = 0; r < R; ++r) {
      const __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(m, wrow[r] + k);
      for (int t = 0; t < T; ++t) {
        acc[r][t] = _mm512_dpbf16_ps(acc[r][t], wv, hi[t]);
        acc[r][t] = _mm512_dpbf16_ps(acc[r][t], wv, lo[t]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      float s = _mm512_reduce_add_ps(acc[r][t]);
      if (bias != nullptr) s += bias[row + r];
      y[t * y_stride + row + r] = s;
    }
  }
}

GQA_AVX512BF16 void MatMulRowsBf16Dot(const float* x, int n, const MatrixView& w, const float* bias, float* y,
                                      int64_t row_begin, int64_t row_end) {
  // Each token's activations as two bf16 rows, hi = bf16(x) and
  // lo = bf16(x - hi), made once per call.
  thread_local std::vector<uint16_t> xb;
  const int64_t cols = w.cols;
  xb.resize(size_t(2 * n) * cols);
  for (int t = 0; t < n; ++t) {
    uint16_t* hi = xb.data() + 2 * t * cols;
    uint16_t* lo = hi + cols;
    for (int64_t k = 0; k < cols; ++k) {
      const float v = x[t * cols + k];
      hi[k] = FloatToBf16(v);
      lo[k] = FloatToBf16(v - Bf16ToFloat(hi[k]));
    }
  }
  const int64_t ys = w.rows;
  int64_t r = row_begin;
  if (n == 1) {
    for (; r + 8 <= row_end; r += 8) TileBf16Dot<8, 1>(xb.data(), cols, w, r, bias, y, ys);
    for (; r < row_end; ++r) TileBf16Dot<1, 1>(xb.data(), cols, w, r, bias, y, ys);
    return;
  }
  for (; r + 4 <= row_end; r += 4) {
    int t = 0;
    for (; t + 4 <= n; t += 4) TileBf16Dot<4, 4>(xb.data() + 2 * t * cols, cols, w, r, bias, y + t * ys, ys);
    for (; t < n; ++t) TileBf16Dot<4, 1>(xb.data() + 2 * t * cols, cols, w, r, bias, y + t * ys, ys);
  }
  for (; r < row_end; ++r) {
    for (int t = 0; t < n; ++t) {
      TileBf16Dot<1, 1>(xb.data() + 2 * t * cols, cols, w, r, bias, y + t * ys, ys);
    }
  }
}

bool CpuHasAvx512F() { return __builtin_cpu_supports("avx512f"); }

bool CpuHasAvx512Bf16() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
}

}  // namespace

bool HasAvx2() {
  // F16C from CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports has
  // no name for it.
  static const bool has = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 29)) != 0;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
  }();
  return has;
}

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx512Bf16: return "avx512-bf16";
  }
  return "?";
}

bool IsaAvailable(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return true;
    case Isa::kAvx2: return HasAvx2();
    case Isa::kAvx512: return HasAvx2() && CpuHasAvx512F();
    case Isa::kAvx512Bf16: return HasAvx2() && CpuHasAvx512Bf16();
  }
  return false;
}

Isa ActiveIsa() {
  // The best the CPU has, chosen once; GQA_CPU_ISA=scalar|avx2|avx512|
  // avx512-bf16 asks for a lower one (benchmarks, tests). An unknown or
  // unavailable name is ignored.
  static const Isa isa = [] {
    Isa best = Isa::kScalar;
    for (Isa i : {Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16}) {
      if (IsaAvailable(i)) best = i;
    }
    if (const char* want = std::getenv("GQA_CPU_ISA"); want != nullptr) {
      for (Isa i : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16}) {
        if (std::strcmp(want, IsaName(i)) == 0 && IsaAvailable(i) && int(i) <= int(best)) best = i;
      }
    }
    return best;
  }();
  return isa;
}

void MatMulRows(const float* x, int n, const MatrixView& w, const float* bias, float* y,
                int64_t row_begin, int64_t row_end) {
  MatMulRowsWith(ActiveIsa(), x, n, w, bias, y, row_begin, row_end);
}

void MatMulRowsWith(Isa isa, const float* x, int n, const MatrixView& w, const float* bias, float* y,
                    int64_t row_begin, int64_t row_end) {
  MatMulRowsWith(isa, Bf16Activations::kF32, x, n, w, bias, y, row_begin, row_end);
}

void MatMulRowsWith(Isa isa, Bf16Activations a, const float* x, int n, const MatrixView& w, const float* bias,
                    float* y, int64_t row_begin, int64_t row_end) {
  if (w.layout != MatrixLayout::kRowMajor) {
    GQA_CHECK(WeightPanelLayout(isa, w.dtype) == w.layout, "weight panels are read by the ISA they were packed for");
    GQA_CHECK(row_begin % kPanelRows == 0 && (row_end % kPanelRows == 0 || row_end == w.rows),
              "a product over weight panels covers whole panels");
  }
  if (w.layout == MatrixLayout::kBf16PairPanels16) {
    a = PairActivationsFor(isa, a);
    thread_local std::vector<uint32_t> packed;
    packed.resize(PairPackedWords(n, w.cols, a));
    PackPairTokens(x, n, w.cols, a, packed.data(), 0, PairTokenTiles(n));
    return PairPanelMatMul(packed.data(), a, n, w, bias, y, row_begin / kPanelRows, NumPanels(row_end));
  }
  if (w.layout == MatrixLayout::kBf16Panels16 && n < kPanelGemmMinTokens) {
    thread_local std::vector<float> packed;
    packed.resize(PanelPackedFloats(n, w.cols));
    PackPanelTokens(x, n, w.cols, packed.data(), 0, PanelTokenTiles(n));
    return PanelMatMul(packed.data(), n, w, bias, y, row_begin / kPanelRows, NumPanels(row_end));
  }
  if (isa == Isa::kScalar || !IsaAvailable(isa)) return MatMulRowsScalar(x, n, w, bias, y, row_begin, row_end);
  if (UseGemm(isa, n, w.dtype)) {
    thread_local std::vector<float> packed;
    packed.resize(PackedActivationsFloats(n, w.cols));
    PackActivations(x, n, w.cols, packed.data(), 0, PackedActivationTiles(n));
    return GemmRows(packed.data(), n, w, bias, y, row_begin, row_end);
  }
  if (isa == Isa::kAvx512Bf16 && w.dtype == DType::kBF16) {
    return MatMulRowsBf16Dot(x, n, w, bias, y, row_begin, row_end);
  }
  switch (w.dtype) {
    case DType::kF32: return MatMulRowsAvx2<DType::kF32>(x, n, w, bias, y, row_begin, row_end);
    case DType::kF16: return MatMulRowsAvx2<DType::kF16>(x, n, w, bias, y, row_begin, row_end);
    case DType::kBF16: return MatMulRowsAvx2<DType::kBF16>(x, n, w, bias, y, row_begin, row_end);
  }
}

void LoadRow(const MatrixView& w, int64_t row, float* out) {
  if (w.layout != MatrixLayout::kRowMajor) {
    for (int64_t k = 0; k < w.cols; ++k) out[k] = PanelElement(w, row, k);
    return;
  }
  const char* base =
      static_cast<const char*>(w.data) + row * w.row_stride * int64_t(DTypeSize(w.dtype));
  for (int64_t k = 0; k < w.cols; ++k) out[k] = LoadElement(base, w.dtype, k);
}

}  // namespace gqa::cpu
