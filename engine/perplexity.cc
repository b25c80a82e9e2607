#include "engine/perplexity.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace gqa {

double PerplexityResult::Perplexity() const { return std::exp(MeanNll()); }

double LogSoftmaxAt(const float* logits, int vocab, int target) {
  double mx = logits[0];
  for (int i = 1; i < vocab; ++i) mx = std::max<double>(mx, logits[i]);
  double sum = 0;
  for (int i = 0; i < vocab; ++i) sum += std::exp(double(logits[i]) - mx);
  return double(logits[target]) - mx - std::log(sum);
}

absl::StatusOr<PerplexityResult> ComputePerplexity(Executor& executor, const std::vector<int>& ids, int context,
                                                   int stride, int chunk) {
  const ModelConfig& c = executor.config();
  const int bs = executor.options().block_size;
  const int64_t n = static_cast<int64_t>(ids.size());
  if (n < 2) return absl::InvalidArgumentError("perplexity needs at least two tokens");
  if (context < 2) return absl::InvalidArgumentError("the context must be at least 2 tokens");
  if (context > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("the context (", context, ") exceeds max_position_embeddings (",
                                                   c.max_position_embeddings, ")"));
  }
  if (stride < 1 || stride > context) return absl::InvalidArgumentError("the stride must be in 1..context");
  // A chunk may want the logits of all its tokens: one row per sequence slot.
  if (chunk < 1 || chunk > std::min(executor.options().max_step_tokens, executor.options().max_step_seqs)) {
    return absl::InvalidArgumentError("the chunk must be in 1..min(max_step_tokens, max_step_seqs)");
  }
  const int blocks = (context + bs - 1) / bs;
  if (blocks > executor.options().num_kv_blocks) {
    return absl::ResourceExhaustedError(absl::StrCat("a context of ", context, " tokens needs ", blocks,
                                                     " KV blocks; the cache has ", executor.options().num_kv_blocks));
  }
  for (int id : ids) {
    if (id < 0 || id >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is outside the vocabulary of ", c.vocab_size));
    }
  }
  PerplexityResult r;
  StepBatch step;
  step.max_blocks_per_seq = blocks;
  for (int i = 0; i < blocks; ++i) step.block_tables.push_back(i);
  std::vector<float> logits;
  int64_t scored_until = 1;  // tokens [1, scored_until) are scored
  for (int64_t begin = 0;; begin += stride) {
    const int64_t end = std::min<int64_t>(begin + context, n);
    // Token i (scored_until <= i < end) is predicted by the logits of i - 1.
    const int64_t first_target = std::max(scored_until, begin + 1);
    for (int64_t c0 = begin; c0 < end; c0 += chunk) {
      const int64_t c1 = std::min<int64_t>(c0 + chunk, end);
      step.token_ids.assign(ids.begin() + c0, ids.begin() + c1);
      step.positions.clear();
      step.slot_mapping.clear();
      step.logits_rows.clear();
      for (int64_t i = c0; i < c1; ++i) {
        const int pos = static_cast<int>(i - begin);
        step.positions.push_back(pos);
        step.slot_mapping.push_back(step.block_tables[pos / bs] * bs + pos % bs);
        if (i + 1 >= first_target && i + 1 < end) step.logits_rows.push_back(static_cast<int32_t>(i - c0));
      }
      step.token_seq.assign(c1 - c0, 0);
      if (step.logits_rows.empty()) step.logits_rows.push_back(static_cast<int32_t>(c1 - c0 - 1));  // unused
      RETURN_IF_ERROR(executor.Step(step, &logits));
      for (size_t k = 0; k < step.logits_rows.size(); ++k) {
        const int64_t i = c0 + step.logits_rows[k];
        if (i + 1 < first_target || i + 1 >= end) continue;
        r.nll_sum -= LogSoftmaxAt(logits.data() + k * size_t(c.vocab_size), c.vocab_size, ids[i + 1]);
        ++r.tokens;
      }
    }
    ++r.windows;
    scored_until = end;
    if (end == n) break;
  }
  return r;
}

}  // namespace gqa
