// Generation for one sequence on one model shard set: prefill the prompt in
// one step, then decode token by token with the KV cache. The batch engine
// (scheduler, paged blocks shared by many requests) builds on the same Model.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "worker/executor.h"

namespace gqa {

// Picks the next token from the full-vocabulary logits.
using TokenPicker = std::function<int(const float* logits, int vocab)>;

// The first index of the largest logit (torch.argmax's choice on ties).
int ArgMax(const float* logits, int vocab);

struct GenerateOptions {
  int max_new_tokens = 16;
  bool stop_at_eos = true;  // stop after emitting one of config.eos_token_ids
};

struct GenerateResult {
  std::vector<int> tokens;                // generated tokens (not the prompt)
  std::vector<float> prompt_last_logits;  // logits at the last prompt position
  bool stopped_at_eos = false;
};

// Runs the model over `prompt` and generates up to max_new_tokens tokens,
// using KV blocks 0, 1, ... of the executor's cache (which must have enough
// blocks for prompt + max_new_tokens).
absl::StatusOr<GenerateResult> GenerateOne(Executor& executor, const std::vector<int>& prompt,
                                           const GenerateOptions& options, const TokenPicker& pick);

}  // namespace gqa
