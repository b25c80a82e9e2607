// The sampling op on the CPU: the rule of kernels/sampling_types.h computed
// by sorting keys, independently of the CUDA kernel's radix selection.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/simd.h"

namespace gqa::cpu {
namespace {

using sampling::Key;
using sampling::KeyToken;

int32_t ArgMaxKeyScalar(const float* v, int vocab) {
  uint64_t best = Key(v[0], 0);
  for (int i = 1; i < vocab; ++i) best = std::max(best, Key(v[i], i));
  return KeyToken(best);
}

// The same token as ArgMaxKeyScalar in two vector passes: the largest logit
// (NaN counted as -inf), then the first position holding it (-0 and 0 are
// equal there, as they are to Key).
GQA_AVX2 int32_t ArgMaxKeyAvx2(const float* v, int vocab) {
  const __m256 neg_inf = _mm256_set1_ps(-INFINITY);
  __m256 m = neg_inf;
  int i = 0;
  for (; i + 8 <= vocab; i += 8) {
    const __m256 x = _mm256_loadu_ps(v + i);
    m = _mm256_max_ps(m, _mm256_blendv_ps(x, neg_inf, _mm256_cmp_ps(x, x, _CMP_UNORD_Q)));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m);
  float mx = lanes[0];
  for (int l = 1; l < 8; ++l) mx = std::max(mx, lanes[l]);
  for (int j = i; j < vocab; ++j) {
    if (v[j] == v[j]) mx = std::max(mx, v[j]);
  }
  // Every logit -inf or NaN: all keys tie on the logit, the first token wins.
  if (mx == -INFINITY) return 0;
  const __m256 target = _mm256_set1_ps(mx);
  for (i = 0; i + 8 <= vocab; i += 8) {
    const int hits = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(v + i), target, _CMP_EQ_OQ));
    if (hits != 0) return i + __builtin_ctz(unsigned(hits));
  }
  for (int j = i; j < vocab; ++j) {
    if (v[j] == mx) return j;
  }
  return ArgMaxKeyScalar(v, vocab);  // not reached
}

// sum over i < n of exp(x[i] - mx), for a finite mx no smaller than any x:
// exp in f32 (ExpNonPositive8), summed in f64 lanes. A NaN in x makes the
// sum NaN, as the scalar sum's.
GQA_AVX2 double SumExpBelowMax(const float* x, int n, float mx) {
  const __m256 vmx = _mm256_set1_ps(mx);
  __m256d acc_lo = _mm256_setzero_pd(), acc_hi = _mm256_setzero_pd();
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = ExpNonPositive8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx));
    acc_lo = _mm256_add_pd(acc_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    acc_hi = _mm256_add_pd(acc_hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, _mm256_add_pd(acc_lo, acc_hi));
  double sum = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
  for (; i < n; ++i) sum += std::exp(double(x[i]) - mx);
  return sum;
}

int32_t ArgMaxKey(const float* v, int vocab) {
  return HasAvx2() ? ArgMaxKeyAvx2(v, vocab) : ArgMaxKeyScalar(v, vocab);
}

// The token chosen from penalized logits y[vocab], whose ArgMaxKey is argmax.
int32_t Choose(const float* y, int vocab, const SamplingRow& p, int32_t argmax) {
  if (!(p.temperature > 0.0f)) return argmax;
  const float m = sampling::KeyLogit(Key(y[argmax], argmax));
  auto mass = [&](int32_t i) -> uint64_t {
    const uint64_t w = sampling::Mass(sampling::Scaled(y[i], m, p.temperature));
    return sampling::PassesMinP(w, p.min_p) ? w : 0;
  };
  std::vector<uint64_t> keys(vocab);
  for (int i = 0; i < vocab; ++i) keys[i] = Key(y[i], i);
  const int k = p.top_k > 0 && p.top_k < vocab ? p.top_k : vocab;
  if (k < vocab) {
    std::nth_element(keys.begin(), keys.begin() + (k - 1), keys.end(), std::greater<uint64_t>());
    keys.resize(k);
  }
  uint64_t cut = *std::min_element(keys.begin(), keys.end());
  if (p.top_p < 1.0f) {
    uint64_t total = 0;
    for (uint64_t key : keys) total += mass(KeyToken(key));
    if (total == 0) return argmax;
    const uint64_t target = sampling::TopPTarget(total, p.top_p);
    std::sort(keys.begin(), keys.end(), std::greater<uint64_t>());
    uint64_t cum = 0;
    for (uint64_t key : keys) {
      cum += mass(KeyToken(key));
      if (cum >= target) {
        cut = key;
        break;
      }
    }
  }
  uint64_t total = 0;
  for (int i = 0; i < vocab; ++i) {
    if (Key(y[i], i) >= cut) total += mass(i);
  }
  if (total == 0) return argmax;
  const uint64_t target = sampling::DrawTarget(total, p.uniform);
  uint64_t cum = 0;
  for (int i = 0; i < vocab; ++i) {
    if (Key(y[i], i) < cut) continue;
    cum += mass(i);
    if (cum > target) return i;
  }
  return argmax;  // not reached: cum ends at total > target
}

}  // namespace

int32_t ArgMaxLogit(const float* v, int vocab) { return ArgMaxKey(v, vocab); }

void SampleRow(const float* x, int vocab, const SamplingRow& p, const PenaltyEntry* penalties, float* y,
               SampleOutput* out) {
  // Log-probabilities below are of the raw logits; the choice is made on
  // penalized ones, a copy in y where the row has penalties.
  const int32_t top = ArgMaxKey(x, vocab);
  if (p.penalty_begin < p.penalty_end) {
    std::copy(x, x + vocab, y);
    for (int32_t e = p.penalty_begin; e < p.penalty_end; ++e) {
      const PenaltyEntry& pe = penalties[e];
      if (pe.token >= 0 && pe.token < vocab) y[pe.token] = sampling::Penalize(x[pe.token], pe, p);
    }
    out->token = Choose(y, vocab, p, ArgMaxKey(y, vocab));
  } else {
    out->token = Choose(x, vocab, p, top);
  }

  const double mx = sampling::KeyLogit(Key(x[top], top));
  double sum = 0;
  if (HasAvx2() && std::isfinite(mx)) {
    sum = SumExpBelowMax(x, vocab, float(mx));
  } else {
    for (int i = 0; i < vocab; ++i) sum += std::exp(double(x[i]) - mx);
  }
  const double log_z = mx + std::log(sum);
  out->logprob = float(x[out->token] - log_z);
  const int n = std::clamp(std::min(p.num_top_logprobs, kMaxTopLogprobs), 0, vocab);
  out->num_top = n;
  if (n > 0) {
    std::vector<uint64_t> keys(vocab);
    for (int i = 0; i < vocab; ++i) keys[i] = Key(x[i], i);
    std::partial_sort(keys.begin(), keys.begin() + n, keys.end(), std::greater<uint64_t>());
    for (int j = 0; j < n; ++j) {
      const int32_t t = KeyToken(keys[j]);
      out->top_tokens[j] = t;
      out->top_logprobs[j] = float(x[t] - log_z);
    }
  }
}

}  // namespace gqa::cpu
