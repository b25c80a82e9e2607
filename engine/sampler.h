// Per-request sampling parameters and their host side: validation, and the
// request's seeded generator, which draws one uniform per sampled token (so
// a seed gives the same tokens whatever else is batched). The choice itself
// (penalties, temperature, top-k / top-p / min-p, logprobs) is the sampling
// op of kernels/, run on the device beside the logits.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <vector>

#include "base/common.h"
#include "kernels/sampling_types.h"

namespace gqa {

struct SamplingParams {
  double temperature = 1.0;  // 0: greedy
  int top_k = 0;             // 0: off
  double top_p = 1.0;        // 1: off
  double min_p = 0.0;        // 0: off
  std::optional<uint64_t> seed;
  double presence_penalty = 0.0;    // subtracted once per token present in the output
  double frequency_penalty = 0.0;   // subtracted per occurrence in the output
  double repetition_penalty = 1.0;  // divides positive / multiplies negative logits of prompt and output tokens
  int logprobs = 0;                 // top-n log-probabilities to report per chosen token (0..20)
};

// A clear message naming the field when a parameter is out of range.
absl::Status ValidateSamplingParams(const SamplingParams& p, int vocab_size);

struct SampledToken {
  int32_t token = 0;
  float logprob = 0.0f;  // log-softmax of the model's logits at the chosen token
  std::vector<std::pair<int32_t, float>> top_logprobs;  // highest first
};

class Sampler {
 public:
  // A request without a seed gets one from `fallback_seed` (printed by the caller if it matters).
  Sampler(const SamplingParams& params, uint64_t fallback_seed);

  // The op's parameters for the next token. `context` holds the prompt then
  // the generated tokens, `prompt_len` of them from the prompt; the penalty
  // entries it needs are appended to *penalties (the row's range points
  // there). Draws the token's uniform unless the request is greedy.
  SamplingRow NextRow(const std::vector<int32_t>& context, int prompt_len, std::vector<PenaltyEntry>* penalties);
  // The op's output as a token with its logprobs.
  static SampledToken ToToken(const SampleOutput& out);

  const SamplingParams& params() const { return params_; }

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

}  // namespace gqa
