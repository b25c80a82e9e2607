// Perplexity of a token sequence through the engine, with sliding windows as
// in Hugging Face's perplexity guide: windows of `context` tokens start every
// `stride` tokens; each window scores only the tokens that no earlier window
// scored, so every token after the first is scored once, with up to
// context - 1 tokens before it (at least context - stride after the first
// window).
#pragma once

#include <cstdint>
#include <vector>

#include "worker/executor.h"

namespace gqa {

struct PerplexityResult {
  double nll_sum = 0;  // natural-log negative log-likelihood summed over scored tokens
  int64_t tokens = 0;  // scored tokens
  int windows = 0;
  double MeanNll() const { return tokens == 0 ? 0.0 : nll_sum / double(tokens); }
  double Perplexity() const;
};

// log p(target) under log-softmax(logits[0, vocab)), in double.
double LogSoftmaxAt(const float* logits, int vocab, int target);

// Scores `ids` (at least two tokens) with windows of `context` tokens every
// `stride` (1 <= stride <= context). Each window is prefilled from position
// 0 in steps of at most `chunk` tokens into KV blocks 0, 1, ...; the
// executor needs ceil(context / block_size) blocks, and max_step_tokens and
// max_step_seqs (which bounds the logits rows of a step) >= chunk.
absl::StatusOr<PerplexityResult> ComputePerplexity(Executor& executor, const std::vector<int>& ids, int context,
                                                   int stride, int chunk);

}  // namespace gqa
