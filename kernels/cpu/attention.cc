// GQA attention over a paged KV cache. One work item is (token, KV head): the
// K and V rows of that head are read once and used by every query head of
// its group (query head h reads KV head h / group_size). K/V are never copied
// per query head, and the cache is read in place through the block table.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"

namespace gqa::cpu {
namespace {

#define GQA_AVX2 __attribute__((target("avx2,fma")))

GQA_AVX2 float DotAvx2(const float* a, const float* b, int n) {
  __m256 acc = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  s = _mm_hadd_ps(s, s);
  s = _mm_hadd_ps(s, s);
  float r = _mm_cvtss_f32(s);
  for (; i < n; ++i) r += a[i] * b[i];
  return r;
}

GQA_AVX2 void AxpyAvx2(float alpha, const float* x, float* y, int n) {
  const __m256 a = _mm256_set1_ps(alpha);
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += alpha * x[i];
}

float Dot(const float* a, const float* b, int n) {
  if (HasAvx2()) return DotAvx2(a, b, n);
  float r = 0.0f;
  for (int i = 0; i < n; ++i) r += a[i] * b[i];
  return r;
}

void Axpy(float alpha, const float* x, float* y, int n) {
  if (HasAvx2()) return AxpyAvx2(alpha, x, y, n);
  for (int i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// bf16 to f32 is a 16-bit shift: eight at a time with AVX2.
GQA_AVX2 void Bf16RowToFloatAvx2(const uint16_t* row, int n, float* out) {
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + i)));
    _mm256_storeu_ps(out + i, _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16)));
  }
  for (; i < n; ++i) out[i] = Bf16ToFloat(row[i]);
}

// A cache row as f32: the row itself for an f32 cache, converted into
// `scratch` (head_dim floats) for bf16.
inline const float* CacheRow(const void* cache, DType dtype, int64_t offset, int hd, float* scratch) {
  if (dtype == DType::kF32) return static_cast<const float*>(cache) + offset;
  const uint16_t* row = static_cast<const uint16_t*>(cache) + offset;
  if (HasAvx2()) {
    Bf16RowToFloatAvx2(row, hd, scratch);
  } else {
    for (int i = 0; i < hd; ++i) scratch[i] = Bf16ToFloat(row[i]);
  }
  return scratch;
}

}  // namespace

void AttentionItems(const float* q, const AttentionMeta& meta, const KvCacheLayout& layout,
                    const void* k_cache, const void* v_cache, const AttentionShape& shape,
                    float* out, int64_t item_begin, int64_t item_end) {
  const int hd = shape.head_dim;
  const int num_kv = shape.num_kv_heads;
  const int bs = layout.block_size;
  const int64_t row_stride = int64_t{layout.num_kv_heads} * hd;  // floats per cache slot
  thread_local std::vector<float> scores;
  thread_local std::vector<float> row_buf;
  if (row_buf.size() < size_t(hd)) row_buf.resize(hd);

  for (int64_t item = item_begin; item < item_end; ++item) {
    const int t = static_cast<int>(item / num_kv);
    const int g = static_cast<int>(item % num_kv);
    const int seq = meta.token_seq[t];
    const int pos = meta.token_pos[t];
    const int start = shape.sliding_window > 0 ? std::max(0, pos - shape.sliding_window + 1) : 0;
    const int ctx = pos + 1 - start;
    const int32_t* table = meta.block_tables + int64_t{seq} * meta.max_blocks_per_seq;
    const int h0 = shape.FirstQueryHead(g);
    const int group = shape.EndQueryHead(g) - h0;  // query heads of this rank reading g
    if (group <= 0) continue;
    const float* q_group = q + (int64_t{t} * shape.num_q_heads + h0) * hd;
    float* out_group = out + (int64_t{t} * shape.num_q_heads + h0) * hd;
    if (scores.size() < size_t(group) * ctx) scores.resize(size_t(group) * ctx);

    // Scores: each K row once for the whole group.
    for (int j = 0; j < ctx; ++j) {
      const int p = start + j;
      const float* k_row = CacheRow(k_cache, layout.dtype,
                                    (int64_t{table[p / bs]} * bs + p % bs) * row_stride + int64_t{g} * hd, hd,
                                    row_buf.data());
      for (int h = 0; h < group; ++h) scores[size_t(h) * ctx + j] = Dot(q_group + h * hd, k_row, hd) * shape.scale;
    }
    // Softmax per query head.
    for (int h = 0; h < group; ++h) {
      float* s = scores.data() + size_t(h) * ctx;
      float m = s[0];
      for (int j = 1; j < ctx; ++j) m = std::max(m, s[j]);
      float sum = 0.0f;
      for (int j = 0; j < ctx; ++j) {
        s[j] = std::exp(s[j] - m);
        sum += s[j];
      }
      const float inv = 1.0f / sum;
      for (int j = 0; j < ctx; ++j) s[j] *= inv;
      std::fill(out_group + h * hd, out_group + (h + 1) * hd, 0.0f);
    }
    // Weighted sum: each V row once for the whole group.
    for (int j = 0; j < ctx; ++j) {
      const int p = start + j;
      const float* v_row = CacheRow(v_cache, layout.dtype,
                                    (int64_t{table[p / bs]} * bs + p % bs) * row_stride + int64_t{g} * hd, hd,
                                    row_buf.data());
      for (int h = 0; h < group; ++h) Axpy(scores[size_t(h) * ctx + j], v_row, out_group + h * hd, hd);
    }
  }
}

}  // namespace gqa::cpu
