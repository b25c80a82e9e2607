// Blocked matrix-matrix product for several tokens at once (prefill, batched
// decode) with AVX2/FMA, in the scheme of BLIS and GotoBLAS:
//
//   y[t, r] = sum_k x[t, k] * w[r, k]
//
// Activations are packed once into slivers of kMr tokens ([tile][k][kMr],
// f32, zero-padded), weights a block at a time into panels of kNr rows
// converted to f32 ([panel][k][kNr], kKc columns: 16 KB, held in L1 while
// every token sliver of an L2-sized block streams past it). The micro-kernel
// keeps a kMr x kNr tile of sums in twelve registers: per column, two weight
// loads, six broadcasts and twelve FMAs.
//
// Every output element is the sum over fixed kKc-column blocks, each summed
// in column order, so it does not depend on the row range a thread is given
// or on the number of tokens: the thread count leaves results bit-identical.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/simd.h"

namespace gqa::cpu {
namespace {

constexpr int kMr = 6;          // tokens per micro-tile
constexpr int kNr = 16;         // weight rows per micro-tile (two 8-float vectors)
constexpr int64_t kKc = 256;    // columns per block: a packed panel is kNr * kKc * 4 = 16 KB
constexpr int64_t kNc = 192;    // rows packed per block: 192 KB of f32 panels (L2)
constexpr int kMcTiles = 16;    // token slivers per L2 block: 16 * 6 * 256 * 4 = 96 KB

// In-register transpose of eight rows of eight floats.
GQA_AVX2 inline void Transpose8x8(__m256 r[8]) {
  __m256 t[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  __m256 u[8];
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

// Packs rows [row0, row0 + nrows) (nrows <= kNr, missing rows zero) and
// columns [k0, k0 + kc) of w into one panel: panel[k * kNr + r].
template <DType D>
GQA_AVX2 void PackPanel(const MatrixView& w, int64_t row0, int nrows, int64_t k0, int64_t kc, float* panel) {
  const int64_t esize = int64_t(DTypeSize(D));
  const char* base = static_cast<const char*>(w.data);
  for (int g = 0; g < kNr; g += 8) {
    const int live = std::clamp(nrows - g, 0, 8);
    if (live == 0) {
      for (int64_t k = 0; k < kc; ++k) std::memset(panel + k * kNr + g, 0, 8 * sizeof(float));
      continue;
    }
    const void* rows[8];
    for (int i = 0; i < 8; ++i) rows[i] = base + (row0 + g + std::min(i, live - 1)) * w.row_stride * esize;
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) r[i] = i < live ? Load8<D>(rows[i], k0 + k) : _mm256_setzero_ps();
      Transpose8x8(r);
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(panel + (k + i) * kNr + g, r[i]);
    }
    for (; k < kc; ++k) {
      for (int i = 0; i < 8; ++i) panel[k * kNr + g + i] = i < live ? LoadElement(rows[i], D, k0 + k) : 0.0f;
    }
  }
}

// c[t * ldc + r] (+)= sum over kc columns of xs[k * kMr + t] * panel[k * kNr + r]
// for t < nt, r < nr; `accumulate` adds to c instead of storing.
GQA_AVX2 void MicroKernel(int64_t kc, const float* xs, const float* panel, float* c, int64_t ldc, int nt, int nr,
                          bool accumulate) {
  // Twelve named accumulators: GCC keeps an array of them in memory.
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 w0 = _mm256_loadu_ps(panel + k * kNr);
    const __m256 w1 = _mm256_loadu_ps(panel + k * kNr + 8);
    const float* xk = xs + k * kMr;
    __m256 xb = _mm256_broadcast_ss(xk + 0);
    c00 = _mm256_fmadd_ps(w0, xb, c00);
    c01 = _mm256_fmadd_ps(w1, xb, c01);
    xb = _mm256_broadcast_ss(xk + 1);
    c10 = _mm256_fmadd_ps(w0, xb, c10);
    c11 = _mm256_fmadd_ps(w1, xb, c11);
    xb = _mm256_broadcast_ss(xk + 2);
    c20 = _mm256_fmadd_ps(w0, xb, c20);
    c21 = _mm256_fmadd_ps(w1, xb, c21);
    xb = _mm256_broadcast_ss(xk + 3);
    c30 = _mm256_fmadd_ps(w0, xb, c30);
    c31 = _mm256_fmadd_ps(w1, xb, c31);
    xb = _mm256_broadcast_ss(xk + 4);
    c40 = _mm256_fmadd_ps(w0, xb, c40);
    c41 = _mm256_fmadd_ps(w1, xb, c41);
    xb = _mm256_broadcast_ss(xk + 5);
    c50 = _mm256_fmadd_ps(w0, xb, c50);
    c51 = _mm256_fmadd_ps(w1, xb, c51);
  }
  const __m256 acc[kMr][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  // A partial tile goes through `tile` first.
  alignas(32) float tile[kMr][kNr];
  float* dst[kMr];
  const bool full = nt == kMr && nr == kNr;
  if (full) {
    for (int t = 0; t < kMr; ++t) dst[t] = c + t * ldc;
  } else {
    for (int t = 0; t < kMr; ++t) dst[t] = tile[t];
  }
  for (int t = 0; t < kMr; ++t) {
    __m256 lo = acc[t][0], hi = acc[t][1];
    if (accumulate && full) {
      lo = _mm256_add_ps(_mm256_loadu_ps(dst[t]), lo);
      hi = _mm256_add_ps(_mm256_loadu_ps(dst[t] + 8), hi);
    }
    _mm256_storeu_ps(dst[t], lo);
    _mm256_storeu_ps(dst[t] + 8, hi);
  }
  if (full) return;
  for (int t = 0; t < nt; ++t) {
    float* ct = c + t * ldc;
    for (int r = 0; r < nr; ++r) ct[r] = accumulate ? ct[r] + tile[t][r] : tile[t][r];
  }
}

template <DType D>
GQA_AVX2 void GemmRowsAvx2(const float* packed_x, int n, const MatrixView& w, const float* bias, float* y,
                           int64_t row_begin, int64_t row_end) {
  const int64_t cols = w.cols, ldc = w.rows;
  const int tiles = (n + kMr - 1) / kMr;
  thread_local std::vector<float> panels;
  panels.resize(size_t(kNc) * kKc);
  for (int64_t jc = row_begin; jc < row_end; jc += kNc) {
    const int64_t nc = std::min(kNc, row_end - jc);
    const int64_t num_panels = (nc + kNr - 1) / kNr;
    for (int64_t pc = 0; pc < cols; pc += kKc) {
      const int64_t kc = std::min(kKc, cols - pc);
      for (int64_t p = 0; p < num_panels; ++p) {
        if (w.layout == MatrixLayout::kBf16Panels16) {
          // Already 16-row panels (row_begin and kNc are multiples of 16): widen only.
          PanelToF32(w, (jc + p * kNr) / kPanelRows, pc, kc, panels.data() + p * kNr * kc);
        } else {
          PackPanel<D>(w, jc + p * kNr, int(std::min<int64_t>(kNr, nc - p * kNr)), pc, kc,
                       panels.data() + p * kNr * kc);
        }
      }
      for (int ic = 0; ic < tiles; ic += kMcTiles) {
        const int ic_end = std::min(tiles, ic + kMcTiles);
        for (int64_t p = 0; p < num_panels; ++p) {
          const int nr = int(std::min<int64_t>(kNr, nc - p * kNr));
          const float* panel = panels.data() + p * kNr * kc;
          for (int tile = ic; tile < ic_end; ++tile) {
            const int nt = std::min(kMr, n - tile * kMr);
            MicroKernel(kc, packed_x + (int64_t{tile} * cols + pc) * kMr, panel,
                        y + int64_t{tile} * kMr * ldc + jc + p * kNr, ldc, nt, nr, pc > 0);
          }
        }
      }
    }
    if (bias != nullptr) {
      for (int t = 0; t < n; ++t)
        for (int64_t r = jc; r < jc + nc; ++r) y[t * ldc + r] += bias[r];
    }
  }
}

}  // namespace

bool UseGemm(Isa isa, int n, DType dtype) {
  // bf16 weights on AVX-512 BF16 keep the vdpbf16ps tiles of matmul.cc.
  if (isa == Isa::kAvx512Bf16 && dtype == DType::kBF16) return false;
  return isa != Isa::kScalar && IsaAvailable(isa) && n >= kGemmMinTokens;
}

size_t PackedActivationsFloats(int n, int64_t cols) { return size_t((n + kMr - 1) / kMr) * kMr * size_t(cols); }

void PackActivations(const float* x, int n, int64_t cols, float* packed, int64_t tile_begin, int64_t tile_end) {
  for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
    float* out = packed + tile * cols * kMr;
    const int64_t t0 = tile * kMr;
    const int nt = int(std::min<int64_t>(kMr, n - t0));
    for (int t = 0; t < kMr; ++t) {
      if (t < nt) {
        const float* xt = x + (t0 + t) * cols;
        for (int64_t k = 0; k < cols; ++k) out[k * kMr + t] = xt[k];
      } else {
        for (int64_t k = 0; k < cols; ++k) out[k * kMr + t] = 0.0f;
      }
    }
  }
}

int64_t PackedActivationTiles(int n) { return (n + kMr - 1) / kMr; }

void GemmRows(const float* packed_x, int n, const MatrixView& w, const float* bias, float* y, int64_t row_begin,
              int64_t row_end) {
  static_assert(kNr == kPanelRows && kNc % kPanelRows == 0, "GEMM panels line up with the weight panels");
  GQA_CHECK(w.layout == MatrixLayout::kRowMajor || (w.layout == MatrixLayout::kBf16Panels16 && row_begin % kPanelRows == 0),
            "a GEMM over weight panels reads AVX2 panels and starts at a panel");
  switch (w.dtype) {
    case DType::kF32: return GemmRowsAvx2<DType::kF32>(packed_x, n, w, bias, y, row_begin, row_end);
    case DType::kF16: return GemmRowsAvx2<DType::kF16>(packed_x, n, w, bias, y, row_begin, row_end);
    case DType::kBF16: return GemmRowsAvx2<DType::kBF16>(packed_x, n, w, bias, y, row_begin, row_end);
  }
}

}  // namespace gqa::cpu
