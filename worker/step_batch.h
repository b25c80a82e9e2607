// The input of one forward step, built on the host by the caller (the
// scheduler, or a single-sequence generator) and identical on every rank.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/sampling_types.h"

namespace gqa {

struct StepBatch {
  // One entry per token of the step.
  std::vector<int32_t> token_ids;
  std::vector<int32_t> positions;     // absolute position in its sequence
  std::vector<int32_t> token_seq;     // index into the block tables
  std::vector<int32_t> slot_mapping;  // KV slot = block * block_size + offset
  // Block tables of the step's sequences, flattened [num_seqs, max_blocks_per_seq].
  std::vector<int32_t> block_tables;
  int max_blocks_per_seq = 0;
  // Tokens whose logits are wanted (usually the last token of each sequence).
  std::vector<int32_t> logits_rows;

  int num_tokens() const { return static_cast<int>(token_ids.size()); }
  int num_seqs() const {
    return max_blocks_per_seq == 0 ? 0 : static_cast<int>(block_tables.size()) / max_blocks_per_seq;
  }
};

// How rank 0 samples the logits rows of a step on its device: one row of
// parameters per entry of logits_rows, and the penalty entries they index.
struct StepSampling {
  std::vector<SamplingRow> rows;
  std::vector<PenaltyEntry> penalties;
};

}  // namespace gqa
