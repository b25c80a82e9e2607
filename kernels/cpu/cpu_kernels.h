// Single-threaded CPU kernels over row ranges; CpuBackend splits work across
// its thread pool by calling these on disjoint ranges.
#pragma once

#include <cstdint>

#include "kernels/backend.h"
#include "kernels/sampling_types.h"

namespace gqa::cpu {

// Whether the AVX2/FMA/F16C paths are usable on this machine.
bool HasAvx2();

// The instruction sets the matrix products are written for, chosen at run
// time: AVX2 is the portable path; AVX-512 BF16 adds vdpbf16ps for bf16
// weights (activations split into two bf16 parts, within 2^-16 of f32).
enum class Isa { kScalar = 0, kAvx2 = 1, kAvx512Bf16 = 2 };
const char* IsaName(Isa isa);
bool IsaAvailable(Isa isa);
// The best available, chosen once (GQA_CPU_ISA may lower it).
Isa ActiveIsa();

// Scalar conversions of one stored element to f32.
float LoadElement(const void* data, DType dtype, int64_t index);
uint16_t FloatToBf16(float f);  // round to nearest even
uint16_t FloatToF16(float f);   // round to nearest even
float Bf16ToFloat(uint16_t h);
float F16ToFloat(uint16_t h);

// y[t, r] = dot(x[t, :], w[r, :]) (+ bias[r]) for t < n, r in [row_begin, row_end).
void MatMulRows(const float* x, int n, const MatrixView& w, const float* bias, float* y,
                int64_t row_begin, int64_t row_end);

// The same with a given instruction set (scalar if it is not available).
void MatMulRowsWith(Isa isa, const float* x, int n, const MatrixView& w, const float* bias, float* y,
                    int64_t row_begin, int64_t row_end);

// Converts row `row` of w into f32 (cols values).
void LoadRow(const MatrixView& w, int64_t row, float* out);

void RmsNormRows(const float* x, const float* weight, int dim, float eps, float* out,
                 int64_t row_begin, int64_t row_end);

// Attention for the (token, kv head) work items [item_begin, item_end), item =
// token * num_kv_heads + kv_head. scratch holds group_size * (max context) floats.
void AttentionItems(const float* q, const AttentionMeta& meta, const KvCacheLayout& layout,
                    const void* k_cache, const void* v_cache, const AttentionShape& shape,
                    float* out, int64_t item_begin, int64_t item_end);

// One row of Backend::Sample: logits x[vocab], y[vocab] scratch for the
// penalized logits.
void SampleRow(const float* x, int vocab, const SamplingRow& params, const PenaltyEntry* penalties, float* y,
               SampleOutput* out);

}  // namespace gqa::cpu
