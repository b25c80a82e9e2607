// bf16 weights repacked once, at import, into panels the AVX2 kernels read
// without transposing or widening them first.
//
// A panel holds kPanelRows = 16 consecutive rows; its columns follow each
// other, 16 bf16 values (32 bytes) per column:
//
//   panel p, column k:  u16[2i] = w[16p + i, k],  u16[2i + 1] = w[16p + 8 + i, k]   (i < 8)
//
// so one 32-byte load gives both halves as f32 with one shift (rows 16p..+7)
// and one mask (rows 16p+8..+15): two integer ops feed 2 x T FMAs for T
// tokens, where the row-major tiles widen each weight once per 3 tokens, and
// a blocked GEMM transposes it into an f32 panel first. Rows past the end of
// the matrix are zero. The repacked matrix takes the same memory as the
// stored one (plus at most 15 zero rows).
//
// Activations are packed once per product into token tiles of up to 6
// ([tile][column][6]: one contiguous stream of broadcasts per tile). With
// several tiles, a panel is taken 256 columns (8 KB) at a time: the first
// tile brings them from memory, prefetching 64 columns ahead, and the others
// find them in L1 and prefetch the next 256. One or two tokens are latency-
// rather than FMA-bound, so their columns are cut into 4 or 2 contiguous
// runs summed side by side (more FMA chains, more memory streams).
//
// Every output element is thus summed in a fixed order that depends only on
// the token count and the column count, never on the row range a thread is
// given: results are bit-identical across thread counts.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/simd.h"

namespace gqa::cpu {
namespace {

constexpr int kMaxTokens = 6;  // tokens per register tile: 12 accumulators
constexpr int64_t kPrefetch = 64;  // columns (2 KB) the first tile prefetches ahead
constexpr int64_t kKc = 256;    // columns of a panel per pass when several tiles share it (8 KB)

inline int LaneOf(int row_in_panel) {
  return row_in_panel < 8 ? 2 * row_in_panel : 2 * (row_in_panel - 8) + 1;
}

// One column of a panel (16 weights) times T tokens' activations, added to
// the 2 x T sums of rows 0-7 (lo) and 8-15 (hi).
template <int T>
GQA_AVX2 __attribute__((always_inline)) inline void ColumnStep(const uint16_t* column, const float* xk,
                                                               __m256i mask, __m256 (&lo)[T], __m256 (&hi)[T]) {
  const __m256i w = _mm256_load_si256(reinterpret_cast<const __m256i*>(column));
  const __m256 wl = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  const __m256 wh = _mm256_castsi256_ps(_mm256_and_si256(w, mask));
#pragma GCC unroll 6
  for (int t = 0; t < T; ++t) {
    const __m256 a = _mm256_broadcast_ss(xk + t);
    lo[t] = _mm256_fmadd_ps(wl, a, lo[t]);
    hi[t] = _mm256_fmadd_ps(wh, a, hi[t]);
  }
}

// out[t * 16 + r] (+)= sum_k x[k * ldk + t] * w[r, k] over the kc columns
// of one panel (from column 0 of `panel` and of x), for T tokens and the
// panel's 16 rows; `accumulate` adds to out. With S > 1 the columns are cut
// into S contiguous runs, each summed on its own (more independent FMA chains
// and S memory streams when T is small), and the runs are added in order at
// the end.
template <int T, int S>
GQA_AVX2 void PanelTile(const uint16_t* panel, int64_t kc, const float* x, int64_t ldk, float* out,
                        bool accumulate, const uint16_t* next) {
  static_assert(2 * T * S <= 12, "at most twelve accumulators");
  __m256 lo[S][T], hi[S][T];
#pragma GCC unroll 4
  for (int s = 0; s < S; ++s) {
#pragma GCC unroll 6
    for (int t = 0; t < T; ++t) lo[s][t] = hi[s][t] = _mm256_setzero_ps();
  }
  const __m256i mask = _mm256_set1_epi32(int(0xFFFF0000u));
  const int64_t run = kc / S;
#pragma GCC unroll 2
  for (int64_t j = 0; j < run; ++j) {
#pragma GCC unroll 4
    for (int s = 0; s < S; ++s) {
      const int64_t k = s * run + j;
      if ((k & 1) == 0) _mm_prefetch(reinterpret_cast<const char*>(next + k * kPanelRows), _MM_HINT_T0);
      ColumnStep<T>(panel + k * kPanelRows, x + k * ldk, mask, lo[s], hi[s]);
    }
  }
  for (int64_t k = S * run; k < kc; ++k) {  // what the runs left over joins the last run
    ColumnStep<T>(panel + k * kPanelRows, x + k * ldk, mask, lo[S - 1], hi[S - 1]);
  }
#pragma GCC unroll 6
  for (int t = 0; t < T; ++t) {
    __m256 l = lo[0][t], h = hi[0][t];
#pragma GCC unroll 4
    for (int s = 1; s < S; ++s) {
      l = _mm256_add_ps(l, lo[s][t]);
      h = _mm256_add_ps(h, hi[s][t]);
    }
    float* o = out + t * kPanelRows;
    if (accumulate) {
      l = _mm256_add_ps(_mm256_loadu_ps(o), l);
      h = _mm256_add_ps(_mm256_loadu_ps(o + 8), h);
    }
    _mm256_storeu_ps(o, l);
    _mm256_storeu_ps(o + 8, h);
  }
}

GQA_AVX2 void RunTile(int nt, const uint16_t* panel, int64_t kc, const float* x, int64_t ldk, float* out,
                      bool accumulate, const uint16_t* next) {
  switch (nt) {
    case 1: return PanelTile<1, 4>(panel, kc, x, ldk, out, accumulate, next);
    case 2: return PanelTile<2, 2>(panel, kc, x, ldk, out, accumulate, next);
    case 3: return PanelTile<3, 2>(panel, kc, x, ldk, out, accumulate, next);
    case 4: return PanelTile<4, 1>(panel, kc, x, ldk, out, accumulate, next);
    case 5: return PanelTile<5, 1>(panel, kc, x, ldk, out, accumulate, next);
    default: return PanelTile<6, 1>(panel, kc, x, ldk, out, accumulate, next);
  }
}

}  // namespace

int64_t PanelTokenTiles(int n) { return NumTokenTiles(n, kMaxTokens); }

int PanelTokenStride(int n) { return n == 1 ? 1 : kMaxTokens; }

size_t PanelPackedFloats(int n, int64_t cols) { return size_t(PanelTokenTiles(n)) * PanelTokenStride(n) * cols; }

void PackPanelTokens(const float* x, int n, int64_t cols, float* packed, int64_t tile_begin, int64_t tile_end) {
  const int stride = PanelTokenStride(n);
  for (int64_t i = tile_begin; i < tile_end; ++i) {
    const TokenTile tile = TokenTileOf(n, i, kMaxTokens);
    float* out = packed + i * stride * cols;
    for (int t = 0; t < tile.count; ++t) {
      const float* xt = x + int64_t{tile.first + t} * cols;
      for (int64_t k = 0; k < cols; ++k) out[k * stride + t] = xt[k];
    }
  }
}

MatrixLayout WeightPanelLayout(Isa isa, DType dtype) {
  if (dtype != DType::kBF16 || !IsaAvailable(isa)) return MatrixLayout::kRowMajor;
  if (isa == Isa::kAvx2) return MatrixLayout::kBf16Panels16;
  if (isa == Isa::kAvx512 || isa == Isa::kAvx512Bf16) return MatrixLayout::kBf16PairPanels16;
  return MatrixLayout::kRowMajor;
}

int64_t NumPanels(int64_t rows) { return (rows + kPanelRows - 1) / kPanelRows; }

size_t PanelBytes(MatrixLayout layout, int64_t rows, int64_t cols) {
  if (layout == MatrixLayout::kBf16PairPanels16) return PairPanelBytes(rows, cols);
  GQA_CHECK(layout == MatrixLayout::kBf16Panels16, "not a panel layout");
  return size_t(NumPanels(rows)) * kPanelRows * size_t(cols) * sizeof(uint16_t);
}

void PackWeightPanels(MatrixLayout layout, const MatrixView& w, uint16_t* out, int64_t panel_begin,
                      int64_t panel_end) {
  if (layout == MatrixLayout::kBf16PairPanels16) return PackWeightPairPanels(w, out, panel_begin, panel_end);
  GQA_CHECK(layout == MatrixLayout::kBf16Panels16, "not a panel layout");
  GQA_CHECK(w.dtype == DType::kBF16 && w.layout == MatrixLayout::kRowMajor, "panels are packed from row-major bf16");
  const uint16_t* src = static_cast<const uint16_t*>(w.data);
  for (int64_t p = panel_begin; p < panel_end; ++p) {
    uint16_t* panel = out + p * kPanelRows * w.cols;
    for (int i = 0; i < kPanelRows; ++i) {
      const int64_t r = p * kPanelRows + i;
      const int lane = LaneOf(i);
      if (r < w.rows) {
        const uint16_t* row = src + r * w.row_stride;
        for (int64_t k = 0; k < w.cols; ++k) panel[k * kPanelRows + lane] = row[k];
      } else {
        for (int64_t k = 0; k < w.cols; ++k) panel[k * kPanelRows + lane] = 0;
      }
    }
  }
}

float PanelElement(const MatrixView& w, int64_t row, int64_t col) {
  if (w.layout == MatrixLayout::kBf16PairPanels16) return PairPanelElement(w, row, col);
  const uint16_t* panel = static_cast<const uint16_t*>(w.data) + (row / kPanelRows) * kPanelRows * w.cols;
  return Bf16ToFloat(panel[col * kPanelRows + LaneOf(int(row % kPanelRows))]);
}

GQA_AVX2 void PanelToF32(const MatrixView& w, int64_t panel, int64_t k0, int64_t kc, float* out) {
  const uint16_t* src = static_cast<const uint16_t*>(w.data) + (panel * w.cols + k0) * kPanelRows;
  const __m256i mask = _mm256_set1_epi32(int(0xFFFF0000u));
  for (int64_t k = 0; k < kc; ++k) {
    const __m256i v = _mm256_load_si256(reinterpret_cast<const __m256i*>(src + k * kPanelRows));
    _mm256_storeu_ps(out + k * kPanelRows, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
    _mm256_storeu_ps(out + k * kPanelRows + 8, _mm256_castsi256_ps(_mm256_and_si256(v, mask)));
  }
}

GQA_AVX2 void PanelMatMul(const float* packed_x, int n, const MatrixView& w, const float* bias, float* y,
                          int64_t panel_begin, int64_t panel_end) {
  GQA_CHECK(w.layout == MatrixLayout::kBf16Panels16, "PanelMatMul reads a matrix of bf16 panels");
  const uint16_t* base = static_cast<const uint16_t*>(w.data);
  const int64_t tiles = PanelTokenTiles(n);
  const int stride = PanelTokenStride(n);
  // With more than one token tile, a panel is read kKc columns at a time: the
  // first tile brings them from memory (prefetching kPrefetch columns ahead),
  // the others find them in L1 and prefetch the next pass.
  const int64_t kc_step = tiles > 1 ? kKc : w.cols;
  thread_local std::vector<float> sums;
  sums.resize(size_t(n) * kPanelRows);
  for (int64_t p = panel_begin; p < panel_end; ++p) {
    const uint16_t* panel = base + p * kPanelRows * w.cols;
    for (int64_t k0 = 0; k0 < w.cols; k0 += kc_step) {
      const int64_t kc = std::min(kc_step, w.cols - k0);
      const uint16_t* here = panel + k0 * kPanelRows;
      for (int64_t i = 0; i < tiles; ++i) {
        const TokenTile tile = TokenTileOf(n, i, kMaxTokens);
        const uint16_t* next = i == 0 ? here + kPrefetch * kPanelRows : here + kc * kPanelRows;
        RunTile(tile.count, here, kc, packed_x + (i * w.cols + k0) * stride, stride,
                sums.data() + int64_t{tile.first} * kPanelRows, k0 > 0, next);
      }
    }
    const int64_t r0 = p * kPanelRows;
    const int nr = int(std::min<int64_t>(kPanelRows, w.rows - r0));
    for (int t = 0; t < n; ++t) {
      float* yt = y + int64_t{t} * w.rows + r0;
      const float* src = sums.data() + int64_t{t} * kPanelRows;
      if (bias != nullptr) {
        for (int r = 0; r < nr; ++r) yt[r] = src[r] + bias[r0 + r];
      } else {
        std::memcpy(yt, src, sizeof(float) * nr);
      }
    }
  }
}

}  // namespace gqa::cpu
