// One device's share of a model and its forward pass over a StepBatch.
#pragma once

#include <map>
#include <memory>
#include <tuple>
#include <utility>
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

  // Decode steps as graphs (CUDA graphs; docs/cuda.md): a step of lone
  // tokens only (no prefill run) of up to max_batch tokens is padded to its
  // bucket, the next power of two, and its device work is captured once per
  // (bucket, block-table width, with/without sampling) and replayed
  // afterwards. Other steps, and keys whose capture failed, run op by op.
  // max_batch is rounded down to a power of two within the workspace; 0
  // turns graphs off. Needs a backend whose graphs() is not null (else a
  // no-op). Every rank of the group must make the same call.
  void EnableDecodeGraphs(int max_batch);
  // The largest bucket (0: graphs off).
  int decode_graph_max_batch() const { return graph_max_batch_; }
  // What happened to the steps so far (tests, logs).
  struct GraphStats {
    int64_t replayed = 0;         // steps run from a graph
    int64_t captured = 0;         // graphs captured (their first step ran op by op)
    int64_t failed_captures = 0;  // buckets left to run op by op
    int64_t eager = 0;            // steps that no graph could run
  };
  const GraphStats& graph_stats() const { return graph_stats_; }

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

  // Where one step's metadata lies in ws_.meta, and its sizes as launched
  // (for a padded step: the bucket's, fixed for every step of the bucket).
  struct StepDims {
    int tokens = 0;       // tokens launched (n, or the bucket)
    int logits_rows = 0;  // logits rows launched (m, or the bucket)
    int blocks_per_seq = 0;
    size_t tables_at = 0, logits_rows_at = 0, rows_at = 0, penalties_at = 0;  // in int32s
  };
  // Builds the host copy of the step's metadata: packed (bucket 0), or
  // padded to `bucket` tokens with block tables ws_.blocks_per_seq wide.
  StepDims PackStep(const StepBatch& b, const StepSampling* sampling, int bucket, std::vector<int32_t>* meta) const;
  // The bucket a step would run in as a graph, or 0.
  int GraphBucket(const StepBatch& b) const;
  // Enqueues the step's device work (embedding to sampling); *rows gets the
  // full-vocabulary logits rows (rank 0). Captured as it is.
  absl::Status EnqueueStep(const StepDims& dims, const KvCache& cache, bool sampling, const float** rows);
  // Graphs exist per (bucket, block-table width, with sampling).
  using GraphKey = std::tuple<int, int, bool>;
  // The block-table width of a padded step whose widest table is
  // blocks_per_seq (the step's max_blocks_per_seq).
  int GraphTableWidth(int blocks_per_seq) const;
  // Captures the step just run op by op (dims of a bucket) as a graph; the
  // ranks agree on whether all of them captured it.
  absl::Status CaptureGraph(const GraphKey& key, const StepDims& dims, const KvCache& cache);

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
    DeviceBuffer flag;     // one float: the ranks' agreement on a capture
  } ws_;

  // Decode graphs: GraphKey -> the backend's graph id, or -1 where capture
  // failed (those steps run op by op).
  int graph_max_batch_ = 0;
  std::map<GraphKey, int> graphs_;
  const void* graph_cache_ = nullptr;  // the KV cache the graphs were captured with
  uint64_t graph_comm_generation_ = 0;
  GraphStats graph_stats_;
  std::unique_ptr<AttentionPlan> step_plan_;  // the step being run (Forward)
};

}  // namespace gqa
