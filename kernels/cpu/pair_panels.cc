// bf16 weights repacked once, at import, for CPUs with AVX-512: with
// AVX-512 BF16, vdpbf16ps multiplies pairs of bf16 values and adds both
// products to one f32 lane; with AVX-512F alone, each pair is widened to two
// f32 vectors (a shift and a mask) for two FMAs. A panel holds kPanelRows =
// 16 consecutive rows; its columns are taken two at a time, 32 bf16 values
// (64 bytes) per column pair:
//
//   panel p, pair j:  u16[2r] = w[16p + r, 2j],  u16[2r + 1] = w[16p + r, 2j + 1]   (r < 16)
//
// One aligned zmm load gives lane r the two weights of row r, and vdpbf16ps
// against the activation pair (x[2j], x[2j + 1]) broadcast to every lane adds
// w[r, 2j] x[2j] + w[r, 2j + 1] x[2j + 1] to row r's sum: one load serves
// 16 rows and every token of a register tile, with no widening and no
// transpose. Rows past the end of the matrix and the second column of an odd
// last pair are zero. The repacked matrix takes the stored bf16's memory
// (plus at most 15 zero rows and one zero column).
//
// Activations are packed per token tile of up to 12 as [pair][token][word],
// one 32-bit broadcast per word. By default on AVX-512 BF16
// (Bf16Activations::kRounded) the word is the pair (bf16(x[2j]),
// bf16(x[2j + 1])), one vdpbf16ps per weight pair and token, as llama.cpp
// does: the bf16 golden model's logits move by about 1.5e-2. With f32
// activations (kF32: AVX-512F, or --cpu-activations f32) the words are
// x[2j] and x[2j + 1] themselves, and the pair's halves, widened to f32, take
// one FMA each: twice the 16-lane operations, exact products. (An earlier
// split of each activation into two bf16 parts for two vdpbf16ps ran at the
// same speed as the FMAs, within 2^-16 of f32; it was dropped for them.)
//
// The register tile is 2 panels (32 rows) x up to 12 tokens: 24 accumulators,
// two weight loads and 12 broadcasts per 24 vdpbf16ps (24 and 48 FMAs for
// f32). One token (decode) is bound by memory, not by arithmetic: it takes 4
// panels at once (four streams; for f32 the odd columns' FMAs in sums of
// their own, eight chains). Several token tiles
// share each pass of 128 column pairs over a block of 8 panels (64 KB, held
// in L2); the first tile brings the pass from memory, prefetching 64 pairs
// ahead, and the others find it in cache.
//
// Every output is summed over column pairs in order, pass after pass, so it
// depends only on the token count being 1 or more and on the column count,
// never on the rows a thread is given: results are bit-identical across
// thread counts.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/simd.h"

namespace gqa::cpu {
namespace {

constexpr int kMaxTokens = 12;     // tokens per register tile
constexpr int64_t kKcPairs = 128;  // column pairs per pass when several tiles share it (8 KB of a panel)
constexpr int64_t kJcPanels = 8;   // panels per block of rows: 64 KB per pass
constexpr int64_t kPairU16 = 2 * kPanelRows;  // u16 per column pair of a panel
// Column pairs (4 KB per panel) that the tile reading weights from memory
// prefetches ahead: without it, one to four streams at a time leave most of
// the bandwidth idle (gqa-bench --mode matmul, 32768 x 2048: 16 tokens 217
// -> 359 GFLOP/s, one token 40 -> 46).
constexpr int64_t kAhead = 64;

int64_t PairsOf(int64_t cols) { return (cols + 1) / 2; }

// Writes (or with `accumulate` adds) a tile's sums to y: acc[r][t] (plus
// second[r * T + t] with kSecond) to y[t * ldy + 16 r + i], rows of the last
// panel from `live` on left alone.
template <int R, int T, bool kSecond, int L>
GQA_AVX512 inline void StoreTile(const __m512 (&acc)[R][T], const __m512 (&second)[L], float* y, int64_t ldy,
                                 int live, bool accumulate) {
#pragma GCC unroll 12
  for (int t = 0; t < T; ++t) {
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      __m512 v = acc[r][t];
      if constexpr (kSecond) v = _mm512_add_ps(v, second[r * T + t]);
      const __mmask16 m = r == R - 1 ? __mmask16((1u << live) - 1) : __mmask16(0xFFFF);
      float* o = y + t * ldy + r * kPanelRows;
      if (accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, o), v);
      _mm512_mask_storeu_ps(o, m, v);
    }
  }
}

// y[t * ldy + 16 r + i] (+)= sum over `pairs` column pairs of panel r (R
// panels, panel_u16 apart) times token t's packed activations
// (x[j * stride + t] = the bf16 pair j), for t < T; rows of the last panel
// from `live` on are not written. With `ahead` > 0, each weight line is
// prefetched that many pairs before it is read.
template <int R, int T>
GQA_AVX512BF16 void PairTile(const uint16_t* panel, int64_t panel_u16, int64_t pairs, const uint32_t* x, int stride,
                             float* y, int64_t ldy, int live, bool accumulate, int64_t ahead) {
  static_assert(R * T <= 24, "at most 24 accumulators");
  __m512 acc[R][T], none[1];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 12
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  }
  for (int64_t j = 0; j < pairs; ++j) {
    __m512bh wv[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      wv[r] = (__m512bh)_mm512_load_si512(panel + r * panel_u16 + j * kPairU16);
      if (ahead > 0) _mm_prefetch(reinterpret_cast<const char*>(panel + r * panel_u16 + (j + ahead) * kPairU16), _MM_HINT_T0);
    }
    const uint32_t* xj = x + j * stride;
#pragma GCC unroll 12
    for (int t = 0; t < T; ++t) {
      const __m512bh xt = (__m512bh)_mm512_set1_epi32(int(xj[t]));
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r][t] = _mm512_dpbf16_ps(acc[r][t], wv[r], xt);
    }
  }
  StoreTile<R, T, false>(acc, none, y, ldy, live, accumulate);
}

// The same product for f32 activations (x[(j * stride + t) * 2 + {0, 1}] =
// x[2j], x[2j + 1] of token t) on AVX-512F: the pair's two bf16 halves
// widened to f32 (shift, mask), one FMA each. kOwn keeps the odd columns'
// products in sums of their own (more chains for one token).
template <int R, int T, bool kOwn>
GQA_AVX512 void PairTileF32(const uint16_t* panel, int64_t panel_u16, int64_t pairs, const uint32_t* x, int stride,
                            float* y, int64_t ldy, int live, bool accumulate, int64_t ahead) {
  static_assert(R * T * (kOwn ? 2 : 1) <= 24, "at most 24 accumulators");
  constexpr int L = kOwn ? R * T : 1;
  __m512 acc[R][T], odd_acc[L];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 12
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  }
#pragma GCC unroll 8
  for (int i = 0; i < L; ++i) odd_acc[i] = _mm512_setzero_ps();
  const __m512i high_halves = _mm512_set1_epi32(int(0xFFFF0000u));
  for (int64_t j = 0; j < pairs; ++j) {
    __m512 even[R], odd[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m512i wv = _mm512_load_si512(panel + r * panel_u16 + j * kPairU16);
      if (ahead > 0) _mm_prefetch(reinterpret_cast<const char*>(panel + r * panel_u16 + (j + ahead) * kPairU16), _MM_HINT_T0);
      even[r] = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(__mmask16(0xFFFF), wv, 16));  // maskz: as in PackPairTokensBf16
      odd[r] = _mm512_castsi512_ps(_mm512_and_si512(wv, high_halves));
    }
    const float* xj = reinterpret_cast<const float*>(x + j * stride * 2);
#pragma GCC unroll 12
    for (int t = 0; t < T; ++t) {
      const __m512 xe = _mm512_set1_ps(xj[2 * t]), xo = _mm512_set1_ps(xj[2 * t + 1]);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        acc[r][t] = _mm512_fmadd_ps(even[r], xe, acc[r][t]);
        if constexpr (kOwn) {
          odd_acc[r * T + t] = _mm512_fmadd_ps(odd[r], xo, odd_acc[r * T + t]);
        } else {
          acc[r][t] = _mm512_fmadd_ps(odd[r], xo, acc[r][t]);
        }
      }
    }
  }
  StoreTile<R, T, kOwn>(acc, odd_acc, y, ldy, live, accumulate);
}

using TileFn = void (*)(const uint16_t*, int64_t, int64_t, const uint32_t*, int, float*, int64_t, int, bool, int64_t);

// The tile for activations `M` (a Bf16Activations), R panels by T tokens;
// kOne: the odd columns' f32 products in sums of their own (one token).
template <Bf16Activations M, int R, int T, bool kOne>
constexpr TileFn TileFor() {
  if constexpr (M == Bf16Activations::kF32) {
    return &PairTileF32<R, T, kOne>;
  } else {
    return &PairTile<R, T>;
  }
}
template <Bf16Activations M, int R, int... Ts>
constexpr std::array<TileFn, sizeof...(Ts)> TileTable(std::integer_sequence<int, Ts...>) {
  return {TileFor<M, R, Ts + 1, false>()...};
}
template <Bf16Activations M, int R>
constexpr std::array<TileFn, kMaxTokens> kTileRow = TileTable<M, R>(std::make_integer_sequence<int, kMaxTokens>());
constexpr Bf16Activations kF32 = Bf16Activations::kF32, kRounded = Bf16Activations::kRounded;
// kTiles[a][r - 1][t - 1]: activations a, r panels (1 or 2) by t tokens (1 to 12).
constexpr std::array<TileFn, kMaxTokens> kTiles[2][2] = {{kTileRow<kF32, 1>, kTileRow<kF32, 2>},
                                                         {kTileRow<kRounded, 1>, kTileRow<kRounded, 2>}};
static_assert(int(kF32) == 0 && int(kRounded) == 1, "kTiles and kDecodeTiles are indexed by the mode");
// kDecodeTiles[a]: one token, four panels at once and one.
constexpr TileFn kDecodeTiles[2][2] = {{TileFor<kF32, 4, 1, true>(), TileFor<kF32, 1, 1, true>()},
                                       {TileFor<kRounded, 4, 1, true>(), TileFor<kRounded, 1, 1, true>()}};

int WordsPerPair(Bf16Activations a) { return a == Bf16Activations::kF32 ? 2 : 1; }

}  // namespace

int64_t PairTokenTiles(int n) { return NumTokenTiles(n, kMaxTokens); }

int PairTokenStride(int n) { return n == 1 ? 1 : kMaxTokens; }

size_t PairPackedWords(int n, int64_t cols, Bf16Activations a) {
  return size_t(PairTokenTiles(n)) * PairTokenStride(n) * size_t(PairsOf(cols)) * WordsPerPair(a);
}

namespace {

// kRounded: each token's activations as bf16 pairs, 16 columns at a time.
GQA_AVX512BF16 void PackPairTokensBf16(const float* x, int n, int64_t cols, uint32_t* packed, int64_t tile_begin,
                                       int64_t tile_end) {
  const int stride = PairTokenStride(n);
  const int64_t pairs = PairsOf(cols);
  thread_local std::vector<uint32_t> pair;  // one token's pairs (bf16 of columns 2j, 2j + 1)
  pair.resize(size_t(pairs) + 8);
  for (int64_t i = tile_begin; i < tile_end; ++i) {
    const TokenTile tile = TokenTileOf(n, i, kMaxTokens);
    uint32_t* out = packed + i * stride * pairs;
    for (int t = 0; t < tile.count; ++t) {
      const float* xt = x + int64_t{tile.first + t} * cols;
      for (int64_t k = 0; k < cols; k += 16) {
        // 16 columns are 8 pairs; masked-off columns are loaded as zero.
        const __mmask16 m = cols - k >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (cols - k)) - 1);
        const __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, xt + k));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(pair.data() + k / 2), (__m256i)h);
      }
      for (int64_t j = 0; j < pairs; ++j) out[j * stride + t] = pair[j];
    }
  }
}

}  // namespace

void PackPairTokens(const float* x, int n, int64_t cols, Bf16Activations a, uint32_t* packed, int64_t tile_begin,
                    int64_t tile_end) {
  if (a == Bf16Activations::kRounded) return PackPairTokensBf16(x, n, cols, packed, tile_begin, tile_end);
  const int stride = PairTokenStride(n);
  const int64_t pairs = PairsOf(cols);
  for (int64_t i = tile_begin; i < tile_end; ++i) {
    const TokenTile tile = TokenTileOf(n, i, kMaxTokens);
    float* out = reinterpret_cast<float*>(packed + i * stride * pairs * 2);
    for (int t = 0; t < tile.count; ++t) {
      const float* xt = x + int64_t{tile.first + t} * cols;
      for (int64_t k = 0; k < cols; ++k) out[((k / 2) * stride + t) * 2 + (k & 1)] = xt[k];
      if (cols % 2) out[((pairs - 1) * stride + t) * 2 + 1] = 0.0f;
    }
  }
}

Bf16Activations PairActivationsFor(Isa isa, Bf16Activations a) {
  return isa == Isa::kAvx512Bf16 && IsaAvailable(isa) ? a : Bf16Activations::kF32;
}

void PairPanelMatMul(const uint32_t* packed_x, Bf16Activations a, int n, const MatrixView& w, const float* bias,
                     float* y, int64_t panel_begin, int64_t panel_end) {
  GQA_CHECK(w.layout == MatrixLayout::kBf16PairPanels16, "PairPanelMatMul reads a matrix of bf16 pair panels");
  GQA_CHECK(a == Bf16Activations::kF32 ? IsaAvailable(Isa::kAvx512) : IsaAvailable(Isa::kAvx512Bf16),
            "pair panels need AVX-512F (f32 activations) or AVX-512 BF16 (bf16 ones)");
  const uint16_t* base = static_cast<const uint16_t*>(w.data);
  const int64_t pairs = PairsOf(w.cols), panel_u16 = pairs * kPairU16, ldy = w.rows;
  const int64_t tiles = PairTokenTiles(n);
  const int stride = PairTokenStride(n), words = WordsPerPair(a);
  const int64_t kc_step = tiles > 1 ? kKcPairs : pairs;
  const auto live_of = [&](int64_t last_panel) {
    return int(std::min<int64_t>(kPanelRows, w.rows - last_panel * kPanelRows));
  };
  for (int64_t jc = panel_begin; jc < panel_end; jc += kJcPanels) {
    const int64_t je = std::min(panel_end, jc + kJcPanels);
    for (int64_t j0 = 0; j0 < pairs; j0 += kc_step) {
      const int64_t kc = std::min(kc_step, pairs - j0);
      for (int64_t i = 0; i < tiles; ++i) {
        const TokenTile tile = TokenTileOf(n, i, kMaxTokens);
        const uint32_t* xt = packed_x + (i * pairs + j0) * stride * words;
        float* yt = y + int64_t{tile.first} * ldy;
        int64_t p = jc;
        if (n == 1) {
          // Four panels at once.
          const TileFn four = kDecodeTiles[int(a)][0], one = kDecodeTiles[int(a)][1];
          for (; p + 4 <= je; p += 4) {
            four(base + p * panel_u16 + j0 * kPairU16, panel_u16, kc, xt, stride, yt + p * kPanelRows, ldy,
                 live_of(p + 3), j0 > 0, kAhead);
          }
          for (; p < je; ++p) {
            one(base + p * panel_u16 + j0 * kPairU16, panel_u16, kc, xt, stride, yt + p * kPanelRows, ldy,
                live_of(p), j0 > 0, kAhead);
          }
          continue;
        }
        for (; p < je; p += 2) {
          const int r = int(std::min<int64_t>(2, je - p));
          kTiles[int(a)][r - 1][tile.count - 1](base + p * panel_u16 + j0 * kPairU16, panel_u16, kc, xt, stride,
                                        yt + p * kPanelRows, ldy, live_of(p + r - 1), j0 > 0, i == 0 ? kAhead : 0);
        }
      }
    }
    if (bias != nullptr) {
      const int64_t r0 = jc * kPanelRows, r1 = std::min(w.rows, je * kPanelRows);
      for (int t = 0; t < n; ++t) {
        for (int64_t r = r0; r < r1; ++r) y[t * ldy + r] += bias[r];
      }
    }
  }
}

size_t PairPanelBytes(int64_t rows, int64_t cols) {
  return size_t(NumPanels(rows)) * size_t(PairsOf(cols)) * kPairU16 * sizeof(uint16_t);
}

void PackWeightPairPanels(const MatrixView& w, uint16_t* out, int64_t panel_begin, int64_t panel_end) {
  GQA_CHECK(w.dtype == DType::kBF16 && w.layout == MatrixLayout::kRowMajor,
            "pair panels are packed from row-major bf16");
  const uint16_t* src = static_cast<const uint16_t*>(w.data);
  const int64_t pairs = PairsOf(w.cols);
  for (int64_t p = panel_begin; p < panel_end; ++p) {
    uint16_t* panel = out + p * pairs * kPairU16;
    for (int i = 0; i < kPanelRows; ++i) {
      const int64_t r = p * kPanelRows + i;
      const uint16_t* row = r < w.rows ? src + r * w.row_stride : nullptr;
      for (int64_t k = 0; k < 2 * pairs; ++k) {
        panel[(k / 2) * kPairU16 + 2 * i + (k & 1)] = row != nullptr && k < w.cols ? row[k] : 0;
      }
    }
  }
}

float PairPanelElement(const MatrixView& w, int64_t row, int64_t col) {
  const uint16_t* panel = static_cast<const uint16_t*>(w.data) + (row / kPanelRows) * PairsOf(w.cols) * kPairU16;
  return Bf16ToFloat(panel[(col / 2) * kPairU16 + 2 * (row % kPanelRows) + (col & 1)]);
}

}  // namespace gqa::cpu
