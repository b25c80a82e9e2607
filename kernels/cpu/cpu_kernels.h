// Single-threaded CPU kernels over row ranges; CpuBackend splits work across
// its thread pool by calling these on disjoint ranges.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/backend.h"
#include "kernels/dtype.h"
#include "kernels/sampling_types.h"

namespace gqa::cpu {

// Whether the AVX2/FMA/F16C paths are usable on this machine.
bool HasAvx2();

// The instruction sets the matrix products are written for, chosen at run
// time: AVX2 is the portable path; AVX-512F multiplies bf16 weights in pair
// panels by f32 activations with 16-lane FMAs; AVX-512 BF16 adds vdpbf16ps
// for them (activations rounded to bf16).
enum class Isa { kScalar = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Bf16 = 3 };
const char* IsaName(Isa isa);
bool IsaAvailable(Isa isa);
// The best available, chosen once (GQA_CPU_ISA may lower it).
Isa ActiveIsa();

// How products over bf16 pair panels take f32 activations (PackPairTokens
// below): kF32 as they are, each weight widened to f32 for an FMA (AVX-512F
// or better); kRounded as bf16(x), one vdpbf16ps per weight pair, as
// llama.cpp does (AVX-512 BF16).
enum class Bf16Activations { kF32, kRounded };
// The mode `isa` runs: `a` where it can, else kF32.
Bf16Activations PairActivationsFor(Isa isa, Bf16Activations a);

// y[t, r] = dot(x[t, :], w[r, :]) (+ bias[r]) for t < n, r in [row_begin, row_end).
void MatMulRows(const float* x, int n, const MatrixView& w, const float* bias, float* y,
                int64_t row_begin, int64_t row_end);

// The same with a given instruction set (scalar if it is not available).
// Pair panels take their activations as `a` says (see Bf16Activations);
// everything else ignores it.
void MatMulRowsWith(Isa isa, const float* x, int n, const MatrixView& w, const float* bias, float* y,
                    int64_t row_begin, int64_t row_end);
void MatMulRowsWith(Isa isa, Bf16Activations a, const float* x, int n, const MatrixView& w, const float* bias,
                    float* y, int64_t row_begin, int64_t row_end);

// The blocked product (gemm.cc) for n >= kGemmMinTokens tokens: activations
// packed once (PackActivations over tiles [0, PackedActivationTiles(n)),
// into PackedActivationsFloats(n, cols) floats), then GemmRows over any
// split of the rows.
// Below 24 tokens the 4x3 register tiles of matmul.cc, which read bf16
// weights in place, beat packing them (gqa-bench --mode matmul: about even
// at 24-32 tokens, the GEMM ahead from 48).
constexpr int kGemmMinTokens = 24;
bool UseGemm(Isa isa, int n, DType dtype);
int64_t PackedActivationTiles(int n);
size_t PackedActivationsFloats(int n, int64_t cols);
void PackActivations(const float* x, int n, int64_t cols, float* packed, int64_t tile_begin, int64_t tile_end);
void GemmRows(const float* packed_x, int n, const MatrixView& w, const float* bias, float* y, int64_t row_begin,
              int64_t row_end);

// bf16 weights repacked once at import (CpuBackend::ImportWeightMatrix) into
// panels of 16 rows, in the layout WeightPanelLayout names for the active
// ISA (row-major: not repacked):
//  - AVX2: MatrixLayout::kBf16Panels16 (panels.cc), read in place by
//    PanelMatMul below kPanelGemmMinTokens tokens and widened by the blocked
//    GEMM into its f32 panels without a transpose from there (PanelToF32).
//    gqa-bench --mode matmul: in place ahead at 16-64 tokens, about even at
//    128, the GEMM ahead in 512-token prefill.
//  - AVX-512F and AVX-512 BF16: MatrixLayout::kBf16PairPanels16
//    (pair_panels.cc), column pairs for vdpbf16ps (or widened to f32 for
//    FMAs), read in place by PairPanelMatMul at every token count.
constexpr int kPanelRows = 16;
constexpr int kPanelGemmMinTokens = 128;
MatrixLayout WeightPanelLayout(Isa isa, DType dtype);
int64_t NumPanels(int64_t rows);
// Bytes of a rows x cols matrix repacked into `layout` (a panel layout).
size_t PanelBytes(MatrixLayout layout, int64_t rows, int64_t cols);
// Packs panels [panel_begin, panel_end) of row-major bf16 w into out.
void PackWeightPanels(MatrixLayout layout, const MatrixView& w, uint16_t* out, int64_t panel_begin,
                      int64_t panel_end);
// One element of a repacked matrix (either panel layout).
float PanelElement(const MatrixView& w, int64_t row, int64_t col);
// Columns [k0, k0 + kc) of one panel as f32: out[k * 16 + r] for row r of
// the panel (the blocked GEMM's weight packing for panels: no transpose).
void PanelToF32(const MatrixView& w, int64_t panel, int64_t k0, int64_t kc, float* out);
// Activations are first packed in token tiles of up to 6 ([tile][col][6],
// one token: x itself) by PackPanelTokens over tiles [0, PanelTokenTiles(n)),
// into PanelPackedFloats(n, cols) floats; PanelMatMul then multiplies any
// range of panels against them.
int64_t PanelTokenTiles(int n);
int PanelTokenStride(int n);
size_t PanelPackedFloats(int n, int64_t cols);
void PackPanelTokens(const float* x, int n, int64_t cols, float* packed, int64_t tile_begin, int64_t tile_end);
void PanelMatMul(const float* packed_x, int n, const MatrixView& w, const float* bias, float* y,
                 int64_t panel_begin, int64_t panel_end);
// Pair panels (AVX-512F or better): activations packed in token tiles of up
// to 12 ([tile][pair][token][word], 32-bit words) by PackPairTokens over
// tiles [0, PairTokenTiles(n)), into PairPackedWords(n, cols, a) words;
// PairPanelMatMul then multiplies any range of panels against them. The
// words per pair: kF32 two floats (x[2j], x[2j + 1]); kRounded one bf16 pair
// (half the arithmetic: llama.cpp's numerics for bf16 weights; logits move
// by about 1.5e-2 relative).
int64_t PairTokenTiles(int n);
int PairTokenStride(int n);
size_t PairPackedWords(int n, int64_t cols, Bf16Activations a);
void PackPairTokens(const float* x, int n, int64_t cols, Bf16Activations a, uint32_t* packed, int64_t tile_begin,
                    int64_t tile_end);
void PairPanelMatMul(const uint32_t* packed_x, Bf16Activations a, int n, const MatrixView& w, const float* bias,
                     float* y, int64_t panel_begin, int64_t panel_end);
size_t PairPanelBytes(int64_t rows, int64_t cols);
void PackWeightPairPanels(const MatrixView& w, uint16_t* out, int64_t panel_begin, int64_t panel_end);
float PairPanelElement(const MatrixView& w, int64_t row, int64_t col);

// Converts row `row` of w into f32 (cols values).
void LoadRow(const MatrixView& w, int64_t row, float* out);

// out[i] = silu(gate[i]) * up[i] for i in [begin, end).
void SiluMulRange(const float* gate, const float* up, float* out, int64_t begin, int64_t end);

void RmsNormRows(const float* x, const float* weight, int dim, float eps, float* out,
                 int64_t row_begin, int64_t row_end);

// Attention works on query tiles: runs of consecutive tokens of one
// sequence at consecutive positions, at most max_tokens long.
struct QueryTile {
  int first_token = 0;
  int count = 0;
};
std::vector<QueryTile> QueryTiles(const AttentionMeta& meta, int max_tokens);
constexpr int kQueryTile = 16;

// The work of one attention call, planned once: an item is (tile, KV head,
// range of positions). A decode token whose context is longer than
// kContextChunk is split into chunks of that many positions (so one long
// sequence keeps every thread busy), each writing its softmax max, sum and
// unnormalised output into a partial slot, combined by MergeAttentionChunks.
// The split depends only on the token's own context, never on the batch or
// the thread count. Items are ordered so that contiguous shares balance
// causal work.
constexpr int kContextChunk = 512;
struct AttentionWork {
  int tile = 0, kv_head = 0;
  int begin = 0, end = 0;  // positions read
  int partial = -1;        // partial slot, -1 when the item is whole
};
struct AttentionMerge {
  int tile = 0, kv_head = 0;
  int first_partial = 0, num_chunks = 0;
};
struct AttentionWorkList {
  std::vector<QueryTile> tiles;
  std::vector<AttentionWork> work;
  std::vector<AttentionMerge> merges;
  int num_partials = 0;
};
// One step's work items, from its host token arrays (sequence, position).
AttentionWorkList PlanAttentionWork(const int32_t* token_seq, const int32_t* token_pos, int num_tokens,
                                    const AttentionShape& shape);
// Floats of one partial slot: (max, sum, output[head_dim]) per query head of a group.
inline int64_t PartialFloats(const AttentionShape& shape) {
  return int64_t{shape.group_size} * (shape.head_dim + 2);
}
void AttentionWorkItems(const float* q, const AttentionMeta& meta, const KvCacheLayout& layout, const void* k_cache,
                        const void* v_cache, const AttentionShape& shape, const AttentionWorkList& plan, float* out,
                        float* partials, int64_t item_begin, int64_t item_end);
void MergeAttentionChunks(const AttentionShape& shape, const AttentionWorkList& plan, const float* partials, float* out,
                          int64_t merge_begin, int64_t merge_end);

// The greedy token of logits v[vocab]: the largest (NaN counted as -inf,
// -0 equal to 0), the first of equals (sampling::Key's order).
int32_t ArgMaxLogit(const float* v, int vocab);

// One row of Backend::Sample: logits x[vocab], y[vocab] scratch for the
// penalized logits.
void SampleRow(const float* x, int vocab, const SamplingRow& params, const PenaltyEntry* penalties, float* y,
               SampleOutput* out);

}  // namespace gqa::cpu
