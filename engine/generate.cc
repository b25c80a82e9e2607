#include "engine/generate.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace gqa {

int ArgMax(const float* logits, int vocab) {
  int best = 0;
  for (int i = 1; i < vocab; ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return best;
}

absl::StatusOr<GenerateResult> GenerateOne(Executor& executor, const std::vector<int>& prompt,
                                           const GenerateOptions& options) {
  const ModelConfig& c = executor.config();
  const int bs = executor.options().block_size;
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
  if (options.max_new_tokens < 0) return absl::InvalidArgumentError("max_new_tokens is negative");
  const int64_t total = int64_t(prompt.size()) + options.max_new_tokens;
  if (total > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("prompt (", prompt.size(), ") + max_new_tokens (",
                                                   options.max_new_tokens, ") exceeds max_position_embeddings (",
                                                   c.max_position_embeddings, ")"));
  }
  const int blocks = static_cast<int>((total + bs - 1) / bs);
  if (blocks > executor.options().num_kv_blocks) {
    return absl::ResourceExhaustedError(absl::StrCat(total, " tokens need ", blocks, " KV blocks; the cache has ",
                                                     executor.options().num_kv_blocks));
  }
  StepBatch step;
  step.max_blocks_per_seq = blocks;
  for (int i = 0; i < blocks; ++i) step.block_tables.push_back(i);

  GenerateResult result;
  StepSampling greedy;
  greedy.rows.resize(1);  // temperature 0
  std::vector<SampleOutput> out;
  std::vector<int> pending = prompt;
  int pos = 0;
  for (;;) {
    step.token_ids.assign(pending.begin(), pending.end());
    step.positions.clear();
    step.slot_mapping.clear();
    for (size_t i = 0; i < pending.size(); ++i, ++pos) {
      step.positions.push_back(pos);
      step.slot_mapping.push_back(step.block_tables[pos / bs] * bs + pos % bs);
    }
    step.token_seq.assign(pending.size(), 0);
    step.logits_rows = {static_cast<int32_t>(pending.size()) - 1};
    const bool want_logits = result.tokens.empty() && options.prompt_logits;
    RETURN_IF_ERROR(executor.Step(step, greedy, &out, want_logits ? &result.prompt_last_logits : nullptr));
    if (int(result.tokens.size()) == options.max_new_tokens) break;
    const int next = out[0].token;
    result.tokens.push_back(next);
    if (options.stop_at_eos &&
        std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), next) != c.eos_token_ids.end()) {
      result.stopped_at_eos = true;
      break;
    }
    if (int(result.tokens.size()) == options.max_new_tokens) break;
    pending = {next};
  }
  return result;
}

}  // namespace gqa
