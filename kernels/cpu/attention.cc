// GQA attention over a paged KV cache. One work item is (query tile, KV
// head), a tile being up to kQueryTile consecutive tokens of one sequence (a
// prefill chunk; a decode token is a tile of one): each K and V row of that
// head is read once and used by every query head of its group (query head h
// reads KV head h / group_size) and every token of the tile, so a long
// prompt reads its cache once per tile, not once per token. K/V are never
// copied per query head, and the cache is read in place through the block
// table. Every (token, head) is computed as alone: same operations, same
// order.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/simd.h"

namespace gqa::cpu {
namespace {

// Cache rows prefetched ahead of use (see AttentionWorkItems): gqa-bench
// --batch 32 --context 256, bf16 cache, A/B on one build: 74 -> 85 and
// 85 -> 95 tok/s against none; 12 ahead was between the two.
constexpr int kRowsAhead = 6;

GQA_AVX2 void AxpyAvx2(float alpha, const float* x, float* y, int n) {
  const __m256 a = _mm256_set1_ps(alpha);
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += alpha * x[i];
}

// NH query heads at once: each 8-element piece of the K row (f32, or bf16
// widened in registers) is loaded once for all of them. Per head: one
// 8-lane accumulator over the dimension, then a fixed horizontal sum, then
// the scalar tail.
template <int NH, DType D>
GQA_AVX2 void DotHeadsBlock(const float* q, int hd, const void* k, float scale, float* scores, int64_t stride) {
  __m256 acc[NH];
  for (int h = 0; h < NH; ++h) acc[h] = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= hd; i += 8) {
    const __m256 kv = Load8<D>(k, i);
    for (int h = 0; h < NH; ++h) acc[h] = _mm256_fmadd_ps(_mm256_loadu_ps(q + h * hd + i), kv, acc[h]);
  }
  for (int h = 0; h < NH; ++h) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc[h]), _mm256_extractf128_ps(acc[h], 1));
    s = _mm_hadd_ps(s, s);
    s = _mm_hadd_ps(s, s);
    float r = _mm_cvtss_f32(s);
    for (int j = i; j < hd; ++j) r += q[h * hd + j] * LoadElement(k, D, j);
    scores[h * stride] = r * scale;
  }
}

template <DType D>
GQA_AVX2 void DotHeadsAvx2(const float* q, int heads, int hd, const void* k, float scale, float* scores,
                           int64_t stride) {
  int h = 0;
  for (; h + 4 <= heads; h += 4) DotHeadsBlock<4, D>(q + h * hd, hd, k, scale, scores + h * stride, stride);
  switch (heads - h) {
    case 3: return DotHeadsBlock<3, D>(q + h * hd, hd, k, scale, scores + h * stride, stride);
    case 2: return DotHeadsBlock<2, D>(q + h * hd, hd, k, scale, scores + h * stride, stride);
    case 1: return DotHeadsBlock<1, D>(q + h * hd, hd, k, scale, scores + h * stride, stride);
  }
}

// out_h += w[h * w_stride] * v for h < heads (out_h = out + h * out_stride):
// each 8-element piece of the V row (f32, or bf16 widened in registers)
// loaded once for all heads; per element the same FMA as AxpyAvx2.
template <DType D>
GQA_AVX2 void AxpyHeadsAvx2(const float* w, int64_t w_stride, int heads, const void* v, int hd, float* out,
                            int64_t out_stride) {
  int i = 0;
  for (; i + 8 <= hd; i += 8) {
    const __m256 vv = Load8<D>(v, i);
    for (int h = 0; h < heads; ++h) {
      float* o = out + h * out_stride + i;
      _mm256_storeu_ps(o, _mm256_fmadd_ps(_mm256_set1_ps(w[h * w_stride]), vv, _mm256_loadu_ps(o)));
    }
  }
  for (int h = 0; h < heads; ++h) {
    const float a = w[h * w_stride];
    for (int j = i; j < hd; ++j) out[h * out_stride + j] += a * LoadElement(v, D, j);
  }
}

// One token's weighted sum over many V rows (decode): out_h = sum over r <
// n of w[h * w_stride + r] * row r, for NH heads. Sixteen dimensions at a
// time, all NH heads' sums in registers across the rows (each sum is the
// same FMA chain over the rows, in order, as AxpyHeadsAvx2's from zero).
template <int NH, DType D>
GQA_AVX2 void SumRowsBlock(const float* w, int64_t w_stride, const void* const* rows, int n, int hd, float* out,
                           int64_t out_stride) {
  int i = 0;
  for (; i + 16 <= hd; i += 16) {
    __m256 acc[NH][2];
    for (int h = 0; h < NH; ++h) acc[h][0] = acc[h][1] = _mm256_setzero_ps();
    for (int r = 0; r < n; ++r) {
      const __m256 v0 = Load8<D>(rows[r], i), v1 = Load8<D>(rows[r], i + 8);
      for (int h = 0; h < NH; ++h) {
        const __m256 a = _mm256_broadcast_ss(w + h * w_stride + r);
        acc[h][0] = _mm256_fmadd_ps(a, v0, acc[h][0]);
        acc[h][1] = _mm256_fmadd_ps(a, v1, acc[h][1]);
      }
    }
    for (int h = 0; h < NH; ++h) {
      _mm256_storeu_ps(out + h * out_stride + i, acc[h][0]);
      _mm256_storeu_ps(out + h * out_stride + i + 8, acc[h][1]);
    }
  }
  for (; i + 8 <= hd; i += 8) {
    __m256 acc[NH];
    for (int h = 0; h < NH; ++h) acc[h] = _mm256_setzero_ps();
    for (int r = 0; r < n; ++r) {
      const __m256 v = Load8<D>(rows[r], i);
      for (int h = 0; h < NH; ++h) acc[h] = _mm256_fmadd_ps(_mm256_broadcast_ss(w + h * w_stride + r), v, acc[h]);
    }
    for (int h = 0; h < NH; ++h) _mm256_storeu_ps(out + h * out_stride + i, acc[h]);
  }
  for (; i < hd; ++i) {
    for (int h = 0; h < NH; ++h) {
      float acc = 0.0f;
      for (int r = 0; r < n; ++r) acc += w[h * w_stride + r] * LoadElement(rows[r], D, i);
      out[h * out_stride + i] = acc;
    }
  }
}

template <DType D>
GQA_AVX2 void SumRowsAvx2(const float* w, int64_t w_stride, int heads, const void* const* rows, int n, int hd,
                          float* out, int64_t out_stride) {
  int h = 0;
  for (; h + 4 <= heads; h += 4) SumRowsBlock<4, D>(w + h * w_stride, w_stride, rows, n, hd, out + h * out_stride, out_stride);
  switch (heads - h) {
    case 3: return SumRowsBlock<3, D>(w + h * w_stride, w_stride, rows, n, hd, out + h * out_stride, out_stride);
    case 2: return SumRowsBlock<2, D>(w + h * w_stride, w_stride, rows, n, hd, out + h * out_stride, out_stride);
    case 1: return SumRowsBlock<1, D>(w + h * w_stride, w_stride, rows, n, hd, out + h * out_stride, out_stride);
  }
}

// Scores of `heads` query heads against one K row of the cache (`kd`: f32 or
// bf16).
void DotHeads(const float* q, int heads, int hd, const void* k, DType kd, float scale, float* scores,
              int64_t stride) {
  if (HasAvx2()) {
    return kd == DType::kF32 ? DotHeadsAvx2<DType::kF32>(q, heads, hd, k, scale, scores, stride)
                             : DotHeadsAvx2<DType::kBF16>(q, heads, hd, k, scale, scores, stride);
  }
  for (int h = 0; h < heads; ++h) {
    float r = 0.0f;
    for (int i = 0; i < hd; ++i) r += q[h * hd + i] * LoadElement(k, kd, i);
    scores[h * stride] = r * scale;
  }
}

void AxpyHeads(const float* w, int64_t w_stride, int heads, const void* v, DType vd, int hd, float* out,
               int64_t out_stride) {
  if (HasAvx2()) {
    return vd == DType::kF32 ? AxpyHeadsAvx2<DType::kF32>(w, w_stride, heads, v, hd, out, out_stride)
                             : AxpyHeadsAvx2<DType::kBF16>(w, w_stride, heads, v, hd, out, out_stride);
  }
  for (int h = 0; h < heads; ++h)
    for (int i = 0; i < hd; ++i) out[h * out_stride + i] += w[h * w_stride] * LoadElement(v, vd, i);
}

void Axpy(float alpha, const float* x, float* y, int n) {
  if (HasAvx2()) return AxpyAvx2(alpha, x, y, n);
  for (int i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// s[j] = exp(s[j] - m) for j < n, m no smaller than any s[j]; returns their
// sum. AVX2: eight at a time (ExpNonPositive8; the last piece padded with
// -inf, which gives 0), summed in eight f32 lanes, then in a fixed order.
GQA_AVX2 float ExpShiftedSumAvx2(float* s, int n, float m) {
  const __m256 vm = _mm256_set1_ps(m);
  __m256 acc = _mm256_setzero_ps();
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 e = ExpNonPositive8(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm));
    _mm256_storeu_ps(s + j, e);
    acc = _mm256_add_ps(acc, e);
  }
  if (j < n) {
    alignas(32) float tail[8];
    std::fill(tail, tail + 8, -INFINITY);
    std::copy(s + j, s + n, tail);
    const __m256 e = ExpNonPositive8(_mm256_sub_ps(_mm256_load_ps(tail), vm));
    _mm256_store_ps(tail, e);
    std::copy(tail, tail + (n - j), s + j);
    acc = _mm256_add_ps(acc, e);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

float ExpShiftedSum(float* s, int n, float m) {
  if (HasAvx2() && std::isfinite(m)) return ExpShiftedSumAvx2(s, n, m);
  float sum = 0.0f;
  for (int j = 0; j < n; ++j) {
    s[j] = std::exp(s[j] - m);
    sum += s[j];
  }
  return sum;
}

}  // namespace

std::vector<QueryTile> QueryTiles(const AttentionMeta& meta, int max_tokens) {
  std::vector<QueryTile> tiles;
  for (int t = 0; t < meta.num_tokens; ++t) {
    if (!tiles.empty()) {
      QueryTile& last = tiles.back();
      const int prev = last.first_token + last.count - 1;
      if (last.count < max_tokens && meta.token_seq[t] == meta.token_seq[prev] &&
          meta.token_pos[t] == meta.token_pos[prev] + 1) {
        ++last.count;
        continue;
      }
    }
    tiles.push_back(QueryTile{t, 1});
  }
  return tiles;
}

AttentionWorkList PlanAttentionWork(const int32_t* token_seq, const int32_t* token_pos, int num_tokens,
                                    const AttentionShape& shape) {
  AttentionMeta meta;  // the host arrays, as QueryTiles reads them
  meta.num_tokens = num_tokens;
  meta.token_seq = token_seq;
  meta.token_pos = token_pos;
  AttentionWorkList plan;
  plan.tiles = QueryTiles(meta, kQueryTile);
  const int64_t num_tiles = int64_t(plan.tiles.size());
  for (int64_t i = 0; i < num_tiles; ++i) {
    // 0, n-1, 1, n-2, ...: under a causal mask later tiles cost more, and a
    // contiguous share of this order gets early and late ones alike.
    const int tile = int(i % 2 == 0 ? i / 2 : num_tiles - 1 - i / 2);
    const QueryTile& qt = plan.tiles[tile];
    const int pos = meta.token_pos[qt.first_token];
    const int j0 = shape.sliding_window > 0 ? std::max(0, pos - shape.sliding_window + 1) : 0;
    const int end = pos + qt.count;
    const bool split = qt.count == 1 && end - j0 > kContextChunk;
    for (int g = 0; g < shape.num_kv_heads; ++g) {
      if (!split) {
        plan.work.push_back(AttentionWork{tile, g, j0, end, -1});
        continue;
      }
      plan.merges.push_back(AttentionMerge{tile, g, plan.num_partials, 0});
      for (int b = j0; b < end; b += kContextChunk) {
        plan.work.push_back(AttentionWork{tile, g, b, std::min(end, b + kContextChunk), plan.num_partials++});
        ++plan.merges.back().num_chunks;
      }
    }
  }
  return plan;
}

void AttentionWorkItems(const float* q, const AttentionMeta& meta, const KvCacheLayout& layout, const void* k_cache,
                        const void* v_cache, const AttentionShape& shape, const AttentionWorkList& plan, float* out,
                        float* partials, int64_t item_begin, int64_t item_end) {
  const int hd = shape.head_dim;
  const int bs = layout.block_size;
  const int window = shape.sliding_window;
  const int64_t row_stride = int64_t{layout.num_kv_heads} * hd;  // floats per cache slot
  const int64_t partial_floats = PartialFloats(shape);
  thread_local std::vector<float> scores;
  thread_local std::vector<const void*> row_ptrs;
  const DType kv_dtype = layout.dtype;
  const auto cache_row = [&](const void* cache, int64_t offset) {
    return static_cast<const char*>(cache) + offset * int64_t(DTypeSize(kv_dtype));
  };

  for (int64_t item = item_begin; item < item_end; ++item) {
    const AttentionWork& work = plan.work[item];
    const QueryTile& tile = plan.tiles[work.tile];
    const int g = work.kv_head;
    const int t0 = tile.first_token, count = tile.count;
    const int seq = meta.token_seq[t0];
    const int p0 = meta.token_pos[t0];
    // Token i of the tile (position p0 + i) attends to [Lo(i), p0 + i],
    // cut to this item's positions [work.begin, work.end).
    auto lo = [&](int i) { return std::max(work.begin, window > 0 ? std::max(0, p0 + i - window + 1) : 0); };
    const int j0 = work.begin, span = work.end - work.begin;
    const int32_t* table = meta.block_tables + int64_t{seq} * meta.max_blocks_per_seq;
    const int h0 = shape.FirstQueryHead(g);
    const int group = shape.EndQueryHead(g) - h0;  // query heads of this rank reading g
    if (group <= 0) continue;
    const int rows = count * group;  // score row i * group + h
    if (scores.size() < size_t(rows) * span) scores.resize(size_t(rows) * span);
    // A split item writes (max, sum, unnormalised output) per head into its
    // partial slot; MergeAttentionChunks combines the chunks.
    float* partial = work.partial >= 0 ? partials + work.partial * partial_floats : nullptr;
    auto q_row = [&](int i, int h) { return q + (int64_t{t0 + i} * shape.num_q_heads + h0 + h) * hd; };
    auto out_row = [&](int i, int h) {
      return partial != nullptr ? partial + int64_t{h} * (hd + 2) + 2
                                : out + (int64_t{t0 + i} * shape.num_q_heads + h0 + h) * hd;
    };
    // Tokens of the tile that see position p: i in [max(0, p - p0), p - p0 + window).
    auto first_seeing = [&](int p) { return std::max(0, p - p0); };
    auto end_seeing = [&](int p) { return window > 0 ? std::min(count, p - p0 + window) : count; };
    auto offset = [&](int p) { return (int64_t{table[p / bs]} * bs + p % bs) * row_stride + int64_t{g} * hd; };

    // A head's rows of consecutive positions lie row_stride apart (and a
    // block apart across blocks): the rows kRowsAhead positions on are
    // prefetched, which the hardware's stride detection leaves to latency.
    const int64_t row_bytes = int64_t{hd} * int64_t(DTypeSize(kv_dtype));
    const auto prefetch = [&](const void* cache, int p) {
      if (p >= j0 + span) return;
      const char* row = cache_row(cache, offset(p));
      for (int64_t b = 0; b < row_bytes; b += 64) __builtin_prefetch(row + b);
    };
    // Scores: each K row once for every query head and token of the tile.
    for (int p = j0; p < j0 + span; ++p) {
      prefetch(k_cache, p + kRowsAhead);
      const void* k_row = cache_row(k_cache, offset(p));
      for (int i = first_seeing(p); i < end_seeing(p); ++i) {
        DotHeads(q_row(i, 0), group, hd, k_row, kv_dtype, shape.scale, scores.data() + size_t(i) * group * span + (p - j0),
                 span);
      }
    }
    // Softmax per (token, query head) over its own range (unnormalised for
    // a chunk).
    for (int i = 0; i < count; ++i) {
      const int a = lo(i) - j0, b = std::min(p0 + i + 1, work.end) - j0;
      for (int h = 0; h < group; ++h) {
        float* s = scores.data() + (size_t(i) * group + h) * span;
        float m = s[a];
        for (int j = a + 1; j < b; ++j) m = std::max(m, s[j]);
        const float sum = ExpShiftedSum(s + a, b - a, m);
        if (partial != nullptr) {
          partial[int64_t{h} * (hd + 2)] = m;
          partial[int64_t{h} * (hd + 2) + 1] = sum;
        } else {
          const float inv = 1.0f / sum;
          for (int j = a; j < b; ++j) s[j] *= inv;
        }
        std::fill(out_row(i, h), out_row(i, h) + hd, 0.0f);
      }
    }
    // Weighted sum. One token (decode) with AVX2: all of its rows at once,
    // the sums held in registers.
    if (count == 1 && HasAvx2()) {
      const int a = lo(0), b = std::min(p0 + 1, work.end);
      row_ptrs.resize(std::max(0, b - a));
      for (int p = a; p < b; ++p) row_ptrs[p - a] = cache_row(v_cache, offset(p));
      float* o = out_row(0, 0);
      const int64_t o_stride = partial != nullptr ? hd + 2 : hd;
      if (kv_dtype == DType::kF32) {
        SumRowsAvx2<DType::kF32>(scores.data() + (a - j0), span, group, row_ptrs.data(), b - a, hd, o, o_stride);
      } else {
        SumRowsAvx2<DType::kBF16>(scores.data() + (a - j0), span, group, row_ptrs.data(), b - a, hd, o, o_stride);
      }
      continue;
    }
    // Otherwise each V row once for every query head and token of the tile.
    for (int p = j0; p < j0 + span; ++p) {
      prefetch(v_cache, p + kRowsAhead);
      const void* v_row = cache_row(v_cache, offset(p));
      for (int i = first_seeing(p); i < end_seeing(p); ++i) {
        AxpyHeads(scores.data() + size_t(i) * group * span + (p - j0), span, group, v_row, kv_dtype, hd, out_row(i, 0),
                  partial != nullptr ? hd + 2 : hd);
      }
    }
  }
}

void MergeAttentionChunks(const AttentionShape& shape, const AttentionWorkList& plan, const float* partials, float* out,
                          int64_t merge_begin, int64_t merge_end) {
  const int hd = shape.head_dim;
  const int64_t partial_floats = PartialFloats(shape);
  for (int64_t i = merge_begin; i < merge_end; ++i) {
    const AttentionMerge& mg = plan.merges[i];
    const int t = plan.tiles[mg.tile].first_token;
    const int h0 = shape.FirstQueryHead(mg.kv_head);
    const int group = shape.EndQueryHead(mg.kv_head) - h0;
    for (int h = 0; h < group; ++h) {
      auto chunk = [&](int c) { return partials + (mg.first_partial + c) * partial_floats + int64_t{h} * (hd + 2); };
      float m = chunk(0)[0];
      for (int c = 1; c < mg.num_chunks; ++c) m = std::max(m, chunk(c)[0]);
      float* o = out + (int64_t{t} * shape.num_q_heads + h0 + h) * hd;
      std::fill(o, o + hd, 0.0f);
      float sum = 0.0f;
      for (int c = 0; c < mg.num_chunks; ++c) {
        const float w = std::exp(chunk(c)[0] - m);
        sum += w * chunk(c)[1];
        Axpy(w, chunk(c) + 2, o, hd);
      }
      const float inv = 1.0f / sum;
      for (int d = 0; d < hd; ++d) o[d] *= inv;
    }
  }
}

}  // namespace gqa::cpu
