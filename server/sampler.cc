#include "server/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
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

SampledToken Sampler::Sample(const float* logits, int vocab, const std::vector<int32_t>& context, int prompt_len) {
  const SamplingParams& p = params_;
  SampledToken out;

  // Log-probabilities of the model's own distribution.
  const float mx = *std::max_element(logits, logits + vocab);
  double sum = 0;
  for (int i = 0; i < vocab; ++i) sum += std::exp(double(logits[i]) - mx);
  const double log_z = mx + std::log(sum);

  work_.assign(logits, logits + vocab);
  if (p.repetition_penalty != 1.0 || p.presence_penalty != 0.0 || p.frequency_penalty != 0.0) {
    std::unordered_map<int32_t, int> out_counts;
    for (size_t i = prompt_len; i < context.size(); ++i) ++out_counts[context[i]];
    if (p.repetition_penalty != 1.0) {
      std::vector<bool> seen(vocab, false);
      for (int32_t t : context) {
        if (t < 0 || t >= vocab || seen[t]) continue;
        seen[t] = true;
        work_[t] = work_[t] > 0 ? float(work_[t] / p.repetition_penalty) : float(work_[t] * p.repetition_penalty);
      }
    }
    for (const auto& [t, n] : out_counts) {
      if (t < 0 || t >= vocab) continue;
      work_[t] -= float(p.frequency_penalty * n + p.presence_penalty);
    }
  }

  int32_t chosen;
  if (p.temperature == 0) {
    chosen = static_cast<int32_t>(std::max_element(work_.begin(), work_.end()) - work_.begin());
  } else {
    // Candidates: the top_k highest (ties by id), all of them sorted when
    // top-p needs an order, else every token in id order. min-p and top-p
    // then cut the temperature-scaled distribution; one draw picks.
    order_.resize(vocab);
    std::iota(order_.begin(), order_.end(), 0);
    const int k = p.top_k > 0 ? std::min(p.top_k, vocab) : vocab;
    auto by_logit = [&](int32_t a, int32_t b) { return work_[a] != work_[b] ? work_[a] > work_[b] : a < b; };
    if (k < vocab) {
      std::partial_sort(order_.begin(), order_.begin() + k, order_.end(), by_logit);
    } else if (p.top_p < 1) {
      std::sort(order_.begin(), order_.end(), by_logit);
    }
    const double top = *std::max_element(work_.begin(), work_.end()) / p.temperature;
    std::vector<double> prob(k);
    for (int i = 0; i < k; ++i) {
      prob[i] = std::exp(work_[order_[i]] / p.temperature - top);  // the largest is 1
      if (prob[i] < p.min_p) prob[i] = 0;
    }
    int n = k;
    double total = std::accumulate(prob.begin(), prob.end(), 0.0);
    if (p.top_p < 1) {  // candidates are sorted here
      double cum = 0;
      int keep = 0;
      while (keep < n) {
        cum += prob[keep++];
        if (cum >= p.top_p * total) break;
      }
      n = keep;
      total = cum;
    }
    const double u = std::uniform_real_distribution<double>(0.0, total)(rng_);
    double cum = 0;
    int pick = -1;
    for (int i = 0; i < n; ++i) {
      if (prob[i] == 0) continue;
      pick = i;  // rounding can leave u at the very top: the last candidate then
      cum += prob[i];
      if (u < cum) break;
    }
    chosen = order_[pick];
  }
  out.token = chosen;
  out.logprob = float(logits[chosen] - log_z);
  if (p.logprobs > 0) {
    std::vector<int32_t> idx(vocab);
    std::iota(idx.begin(), idx.end(), 0);
    const int n = std::min(p.logprobs, vocab);
    std::partial_sort(idx.begin(), idx.begin() + n, idx.end(), [&](int32_t a, int32_t b) {
      return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
    });
    for (int i = 0; i < n; ++i) out.top_logprobs.push_back({idx[i], float(logits[idx[i]] - log_z)});
  }
  return out;
}

}  // namespace gqa
