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
                                                     Communicator* comm);

  // Runs one step: writes the step's K/V into `cache` and, on rank 0,
  // returns in *logits the f32 full-vocabulary logits of batch.logits_rows,
  // [rows, vocab] row-major (other ranks leave it empty). Every rank of the
  // group must call Forward with the same batch. Invalid batches are refused
  // before any device work or collective.
  absl::Status Forward(const StepBatch& batch, const KvCache& cache, std::vector<float>* logits);

  const ModelConfig& config() const { return config_; }
  const RankShard& shard() const { return shard_; }
  const ShardPlan& plan() const { return plan_; }
  const ModelWeights& weights() const { return weights_; }
  // Sizes every activation and step buffer once for steps of up to
  // max_tokens tokens, max_seqs sequences (and logits rows) and
  // max_blocks_per_seq blocks per sequence; Forward refuses larger steps.
  absl::Status ReserveWorkspace(int max_tokens, int max_seqs, int max_blocks_per_seq);

  // The KV cache geometry this rank needs for `num_blocks` blocks, in the
  // layout its backend chose.
  KvCacheLayout CacheLayout(int num_blocks, int block_size, DType dtype = DType::kF32) const;
  // The attention shape of this rank.
  AttentionShape Shape() const;

 private:
  Model(const ModelConfig& c, const ShardPlan& p, Backend* b, Communicator* comm)
      : config_(c), plan_(p), shard_(p.ranks[comm->rank()]), backend_(b), comm_(comm) {}
  absl::Status Validate(const StepBatch& batch, const KvCache& cache) const;
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
    int tokens = 0, logits = 0, seqs = 0, blocks_per_seq = 0;
    size_t meta_ints = 0;
    DeviceBuffer meta;  // step metadata: ids, positions, seq, slots, tables, logits rows
    DeviceBuffer hidden, normed, q, k, v, attn, proj, gate, up, last, logits_out, logits_all;
  } ws_;
};

}  // namespace gqa
