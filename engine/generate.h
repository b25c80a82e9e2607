// Greedy generation for one sequence on one model shard set: prefill the
// prompt in one step, then decode token by token with the KV cache, each
// token chosen on the device. The batch engine (scheduler, paged blocks
// shared by many requests) builds on the same Model.
#pragma once

#include <cstdint>
#include <vector>

#include "worker/executor.h"

namespace gqa {

// The first index of the largest logit (torch.argmax's choice on ties).
int ArgMax(const float* logits, int vocab);

struct GenerateOptions {
  int max_new_tokens = 16;
  bool stop_at_eos = true;  // stop after emitting one of config.eos_token_ids
  bool prompt_logits = true;  // copy the logits at the last prompt position to the host
};

struct GenerateResult {
  std::vector<int> tokens;                // generated tokens (not the prompt)
  std::vector<float> prompt_last_logits;  // logits at the last prompt position, if asked for
  bool stopped_at_eos = false;
};

// Runs the model over `prompt` and generates up to max_new_tokens greedy
// tokens (ArgMax's choice), using KV blocks 0, 1, ... of the executor's cache
// (which must have enough blocks for prompt + max_new_tokens).
absl::StatusOr<GenerateResult> GenerateOne(Executor& executor, const std::vector<int>& prompt,
                                           const GenerateOptions& options);

}  // namespace gqa
