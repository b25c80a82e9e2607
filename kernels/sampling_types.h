// Inputs and outputs of Backend::Sample, and the arithmetic that decides the
// choice. The CPU op and the CUDA kernel both call these functions, built only
// from correctly rounded operations (explicit fmaf, no contraction), so they
// keep the same tokens for the same inputs and uniform. No absl here: CUDA
// sources include it.
#pragma once

#include <cstdint>
#if !defined(__CUDACC__)
#include <cmath>
#endif

#include "kernels/op_types.h"

namespace gqa {

constexpr int kMaxTopLogprobs = 20;

// How one row is sampled. Filters apply in this order to the penalized
// logits: temperature, top-k, min-p, top-p; then one draw.
struct SamplingRow {
  float temperature = 0.0f;  // 0: greedy, the first index of the largest penalized logit
  int32_t top_k = 0;         // 0: off
  float top_p = 1.0f;        // 1: off
  float min_p = 0.0f;        // 0: off; relative to the most likely token
  float presence_penalty = 0.0f;    // subtracted once from tokens present in the output
  float frequency_penalty = 0.0f;   // subtracted per occurrence in the output
  float repetition_penalty = 1.0f;  // divides positive / multiplies negative logits of context tokens
  int32_t num_top_logprobs = 0;     // 0..kMaxTopLogprobs
  // This row's entries in the step's PenaltyEntry array: [begin, end).
  int32_t penalty_begin = 0;
  int32_t penalty_end = 0;
  // In [0, 1): drawn on the host from the request's own generator, one per
  // sampled token, so a seed reproduces whatever else is in the batch.
  double uniform = 0.0;
};

// One distinct token of a row's context (prompt and output).
struct PenaltyEntry {
  int32_t token = 0;
  int32_t output_count = 0;  // occurrences in the output (0: prompt only)
};

struct SampleOutput {
  int32_t token = 0;
  float logprob = 0.0f;  // log-softmax of the raw logits at `token`
  int32_t num_top = 0;   // = the row's num_top_logprobs, at most the vocabulary
  int32_t top_tokens[kMaxTopLogprobs];  // highest raw logit first, ties by lower id
  float top_logprobs[kMaxTopLogprobs];
};

// The rule, exactly (both backends implement it):
//  - Greedy (temperature 0): the token of the largest Key of the penalized
//    logits y, i.e. the first index of the maximum.
//  - Else, with m = the largest y: candidates A = the top_k largest Keys
//    (all when top_k is 0 or >= vocab); ties in y are broken by lower id.
//    mass(i) = Mass(Scaled(y_i, m, T)), or 0 when it fails min-p.
//    top-p keeps the shortest prefix of A in Key order whose mass reaches
//    TopPTarget(total mass of A); its last Key is the cut (with top_p = 1:
//    the cut is A's). The kept tokens S = {Key >= cut, mass > 0}; the draw
//    picks the first id whose cumulative mass over S in id order exceeds
//    DrawTarget(total mass of S, uniform). A row whose mass is all 0 (inf or
//    NaN logits) falls back to greedy.
namespace sampling {

// Token probabilities are compared and summed as integers: mass(i) =
// exp(z_i) * 2^kMassBits, where z_i = (y_i - max y) / temperature <= 0. Sums
// are then exact and independent of their order, so the CPU and the GPU cut
// top-p and draw at the same place. A vocabulary of up to 2^kMaxVocabBits
// tokens cannot overflow 64 bits.
constexpr int kMassBits = 42;
constexpr int kMaxVocabBits = 21;

// Bit casts and a product that nvcc may not fuse into an fma with a later add.
GQA_HOST_DEVICE inline uint32_t FloatBits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  __builtin_memcpy(&u, &f, sizeof(u));
  return u;
#endif
}
GQA_HOST_DEVICE inline float BitsFloat(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  __builtin_memcpy(&f, &u, sizeof(f));
  return f;
#endif
}
GQA_HOST_DEVICE inline float MulRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

// e^z * 2^kMassBits truncated to an integer, for z <= 0 (NaN: 0). Tokens
// below e^-32 of the most likely one weigh 0 (they are below 2^-46).
GQA_HOST_DEVICE inline uint64_t Mass(float z) {
  if (!(z > -32.0f)) return 0;
  if (z > 0.0f) z = 0.0f;
  // z = k ln2 + r, |r| <= ln2 / 2; e^r by its Taylor series to degree 7.
  const float k = rintf(MulRn(z, 1.44269504f));
  float r = fmaf(k, -0.693145752f, z);
  r = fmaf(k, -1.42860677e-06f, r);
  float p = 1.0f / 5040.0f;
  p = fmaf(p, r, 1.0f / 720.0f);
  p = fmaf(p, r, 1.0f / 120.0f);
  p = fmaf(p, r, 1.0f / 24.0f);
  p = fmaf(p, r, 1.0f / 6.0f);
  p = fmaf(p, r, 0.5f);
  p = fmaf(p, r, 1.0f);
  p = fmaf(p, r, 1.0f);
  // p * 2^(k + kMassBits): an exact power-of-two scaling (k >= -47).
  const int e = int(k) + kMassBits;
  return uint64_t(MulRn(p, BitsFloat(uint32_t(e + 127) << 23)));
}

// Whether a token of mass m passes min-p (exact: both sides are doubles).
GQA_HOST_DEVICE inline bool PassesMinP(uint64_t mass, float min_p) {
  return double(mass) >= double(min_p) * double(uint64_t{1} << kMassBits);
}

// A total order on (logit, token id): higher logit first, then lower id.
// -0 counts as +0 and NaN as -inf.
GQA_HOST_DEVICE inline uint64_t Key(float logit, int32_t token) {
  if (logit != logit) logit = -INFINITY;
  if (logit == 0.0f) logit = 0.0f;
  uint32_t u = FloatBits(logit);
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (uint64_t(u) << 32) | uint64_t(0xffffffffu - uint32_t(token));
}

GQA_HOST_DEVICE inline float KeyLogit(uint64_t key) {
  uint32_t u = uint32_t(key >> 32);
  return BitsFloat((u & 0x80000000u) ? (u & 0x7fffffffu) : ~u);
}

GQA_HOST_DEVICE inline int32_t KeyToken(uint64_t key) { return int32_t(0xffffffffu - uint32_t(key)); }

// The penalized logit of a context token (the semantics of OpenAI's
// presence/frequency and of Hugging Face's repetition penalty).
GQA_HOST_DEVICE inline float Penalize(float logit, const PenaltyEntry& e, const SamplingRow& p) {
  float y = logit > 0.0f ? logit / p.repetition_penalty : MulRn(logit, p.repetition_penalty);
  if (e.output_count > 0) y = y - fmaf(p.frequency_penalty, float(e.output_count), p.presence_penalty);
  return y;
}

// z_i: the temperature-scaled logit relative to the largest, <= 0.
GQA_HOST_DEVICE inline float Scaled(float y, float max, float temperature) { return (y - max) / temperature; }

// The top-p target for candidates of total mass `total` > 0: the shortest
// prefix (by Key, highest first) whose mass reaches it is kept.
GQA_HOST_DEVICE inline uint64_t TopPTarget(uint64_t total, float top_p) {
  const uint64_t t = uint64_t(double(total) * double(top_p));
  return t < 1 ? 1 : (t > total ? total : t);
}

// Where the draw lands in [0, total): the token whose cumulative mass (in id
// order) first exceeds it is chosen.
GQA_HOST_DEVICE inline uint64_t DrawTarget(uint64_t total, double uniform) {
  const uint64_t t = uint64_t(uniform * double(total));
  return t >= total ? total - 1 : t;
}

}  // namespace sampling
}  // namespace gqa
