#include "engine/sampler.h"

#include <unordered_map>

#include "absl/strings/str_cat.h"

namespace gqa {

absl::Status ValidateSamplingParams(const SamplingParams& p, int vocab_size) {
  auto bad = [](const char* field, auto value, const char* rule) {
    return absl::InvalidArgumentError(absl::StrCat("'", field, "' = ", value, ": ", rule));
  };
  if (!(p.temperature >= 0 && p.temperature <= 100)) return bad("temperature", p.temperature, "must be in [0, 100]");
  if (p.top_k < 0) return bad("top_k", p.top_k, "must be >= 0 (0 disables it)");
  if (!(p.top_p > 0 && p.top_p <= 1)) return bad("top_p", p.top_p, "must be in (0, 1]");
  if (!(p.min_p >= 0 && p.min_p <= 1)) return bad("min_p", p.min_p, "must be in [0, 1]");
  if (!(p.presence_penalty >= -2 && p.presence_penalty <= 2)) return bad("presence_penalty", p.presence_penalty, "must be in [-2, 2]");
  if (!(p.frequency_penalty >= -2 && p.frequency_penalty <= 2)) return bad("frequency_penalty", p.frequency_penalty, "must be in [-2, 2]");
  if (!(p.repetition_penalty > 0 && p.repetition_penalty <= 10)) return bad("repetition_penalty", p.repetition_penalty, "must be in (0, 10]");
  if (p.logprobs < 0 || p.logprobs > 20) return bad("logprobs", p.logprobs, "must be in [0, 20]");
  (void)vocab_size;
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingParams& params, uint64_t fallback_seed)
    : params_(params), rng_(params.seed.value_or(fallback_seed)) {}

SamplingRow Sampler::NextRow(const std::vector<int32_t>& context, int prompt_len,
                             std::vector<PenaltyEntry>* penalties) {
  const SamplingParams& p = params_;
  SamplingRow row;
  row.temperature = float(p.temperature);
  row.top_k = p.top_k;
  row.top_p = float(p.top_p);
  row.min_p = float(p.min_p);
  row.presence_penalty = float(p.presence_penalty);
  row.frequency_penalty = float(p.frequency_penalty);
  row.repetition_penalty = float(p.repetition_penalty);
  row.num_top_logprobs = p.logprobs;
  row.penalty_begin = row.penalty_end = int32_t(penalties->size());
  // Repetition reaches every context token; presence and frequency only the output's.
  const bool repetition = p.repetition_penalty != 1.0;
  if (repetition || p.presence_penalty != 0.0 || p.frequency_penalty != 0.0) {
    std::unordered_map<int32_t, size_t> entry;
    for (size_t i = repetition ? 0 : size_t(prompt_len); i < context.size(); ++i) {
      auto [it, fresh] = entry.try_emplace(context[i], penalties->size());
      if (fresh) penalties->push_back({context[i], 0});
      if (i >= size_t(prompt_len)) ++(*penalties)[it->second].output_count;
    }
    row.penalty_end = int32_t(penalties->size());
  }
  if (row.temperature > 0.0f) row.uniform = double(rng_() >> 11) * 0x1.0p-53;  // 53 random bits in [0, 1)
  return row;
}

SampledToken Sampler::ToToken(const SampleOutput& out) {
  SampledToken t;
  t.token = out.token;
  t.logprob = out.logprob;
  for (int j = 0; j < out.num_top; ++j) t.top_logprobs.push_back({out.top_tokens[j], out.top_logprobs[j]});
  return t;
}

}  // namespace gqa
