// One device's share of a model and its forward pass over a StepBatch.
#pragma once

#include <memory>
#include <vector>

#include "kernels/backend.h"
#include "worker/communicator.h"
#include "worker/config.h"
#include "worker/kv_cache.h"
#include "worker/step_batch.h"
#include "worker/shard_plan.h"
#include "worker/weights.h"

namespace gqa {

class Model {
 public:
  static absl::StatusOr<std::unique_ptr<Model>> Load(const ModelConfig& config, const Checkpoint& ckpt,
                                                     const ShardPlan& plan, Backend* backend,
                                                     Communicator* comm, WeightLoadCounter* counter = nullptr);

  // Runs one step: writes the step's K/V into `cache`, then on rank 0, for
  // the rows of batch.logits_rows: with `sampling`, samples each row on the
  // device and returns one output per row in *samples; with `logits`
  // (tests, debugging), copies the f32 full-vocabulary logits [rows, vocab]
  // to the host. Other ranks leave both empty. Every rank of the group must
  // call Forward with the same arguments. Invalid steps are refused before
  // any device work or collective.
  absl::Status Forward(const StepBatch& batch, const KvCache& cache, const StepSampling* sampling,
                       std::vector<SampleOutput>* samples, std::vector<float>* logits);

  const ModelConfig& config() const { return config_; }
  const RankShard& shard() const { return shard_; }
  const ShardPlan& plan() const { return plan_; }
  const ModelWeights& weights() const { return weights_; }
  // Sizes every activation and step buffer once for steps of up to
  // max_tokens tokens, max_seqs sequences (and logits rows),
  // max_blocks_per_seq blocks per sequence and max_penalty_entries sampling
  // penalty entries; Forward refuses larger steps.
  absl::Status ReserveWorkspace(int max_tokens, int max_seqs, int max_blocks_per_seq, int max_penalty_entries);

  // The KV cache geometry this rank needs for `num_blocks` blocks, in the
  // layout its backend chose.
  KvCacheLayout CacheLayout(int num_blocks, int block_size, DType dtype = DType::kF32) const;
  // The attention shape of this rank.
  AttentionShape Shape() const;

 private:
  Model(const ModelConfig& c, const ShardPlan& p, Backend* b, Communicator* comm)
      : config_(c), plan_(p), shard_(p.ranks[comm->rank()]), backend_(b), comm_(comm) {}
  absl::Status Validate(const StepBatch& batch, const KvCache& cache, const StepSampling* sampling) const;
  int MaxVocabSlice() const;

  ModelConfig config_;
  ShardPlan plan_;
  RankShard shard_;
  Backend* backend_;
  Communicator* comm_;
  ModelWeights weights_;
  DeviceBuffer inv_freq_;

  // Activations and step metadata, sized once by ReserveWorkspace.
  struct Workspace {
    int tokens = 0, logits = 0, seqs = 0, blocks_per_seq = 0, penalties = 0;
    size_t meta_ints = 0;
    // Step metadata: ids, positions, seq, slots, tables, logits rows; on
    // rank 0 then the sampling rows and penalty entries (8-byte aligned).
    DeviceBuffer meta;
    DeviceBuffer hidden, normed, q, k, v, attn, proj, gate, up, last, logits_out, logits_all;
    DeviceBuffer rows;     // rank 0 with TP > 1: full logits rows [logits, vocab]
    DeviceBuffer samples;  // rank 0: SampleOutput [logits]
  } ws_;
};

}  // namespace gqa
