// Owns the tensor-parallel workers of one model: one per rank, each with its
// own backend, weight shard and KV-cache shard, on any device kind (see
// DeviceGroup). Ranks are set up in parallel, each on its own thread. Rank 0
// runs steps on the caller's thread, the others on their own threads; every
// rank gets the same step.
//
// Under MPI (options.mpi) the executor holds only this process's rank. On
// rank 0, Step broadcasts each step to the other processes, whose executors
// run it in ServeSteps. A failure of any rank there fails the whole job.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "worker/device_group.h"
#include "worker/model.h"
#include "worker/mpi_job.h"

namespace gqa {

struct ExecutorOptions {
  DeviceKind device = DeviceKind::kCpu;
  int tp = 1;                 // tensor-parallel ranks (simulated devices on the CPU)
  int threads_per_rank = 0;   // 0: hardware threads / tp, at least 1
  int num_kv_blocks = 64;     // KV blocks per rank (the same block ids on every rank)
  int block_size = 16;        // tokens per block
  DType kv_dtype = DType::kF32;  // f32 or bf16
  // The largest step: activations and step buffers are sized for it once, at
  // start-up; a larger step is refused.
  int max_step_tokens = 2048;
  int max_step_seqs = 256;
  // Decode steps of up to cuda_graph_max_batch tokens run as CUDA graphs,
  // one per batch-size bucket (powers of two), on cuda and cuda-sim
  // (docs/cuda.md); other steps run kernel by kernel. Off: every step does.
  bool cuda_graphs = true;
  int cuda_graph_max_batch = 256;
  // Penalty entries (distinct context tokens of the rows with penalties) a
  // step may carry; 0: max_step_seqs x min(vocab, max_position_embeddings),
  // at most 2^21 (16 MiB).
  int max_step_penalty_entries = 0;
  // Progress of weight loading, counted over all ranks; may be null.
  WeightLoadCounter* load_counter = nullptr;
  // Lock the checkpoint's mapped files in RAM before loading (--mlock): the
  // CPU backend reads weights from the mapping, which the kernel may
  // otherwise evict while idle. Where the CPU backend repacked weights at
  // load (bf16 panels), the lock is then narrowed to the memory the ranks
  // read: the repacked copies and the views still into the mapping.
  bool mlock = false;
  // CPU backend, bf16 weights on AVX-512 BF16: activations rounded to one
  // bf16 in the matrix products (kBf16, as llama.cpp does) or kept f32 with
  // the weights widened (kF32: twice the arithmetic; logits about 1.5e-2
  // relative closer to an f32 computation). kAuto leaves the backend's
  // default: kBf16, or GQA_CPU_BF16_ACTIVATIONS=0 / 1. Other ISAs and dtypes
  // compute in f32 either way.
  CpuActivations cpu_activations = CpuActivations::kAuto;
  // One rank per process: this process runs rank mpi->rank() of an MPI job
  // of tp = mpi->size() ranks. Null: every rank is a thread of this process.
  MpiJob* mpi = nullptr;
};

class Executor {
 public:
  // Takes ownership of the checkpoint: weights are views into it.
  static absl::StatusOr<std::unique_ptr<Executor>> Create(const ModelConfig& config,
                                                          std::unique_ptr<Checkpoint> checkpoint,
                                                          const ExecutorOptions& options);
  // Reads config.json and the safetensors of a model directory.
  static absl::StatusOr<std::unique_ptr<Executor>> Open(const std::string& dir, const ExecutorOptions& options);
  ~Executor();

  // Runs one step on every rank and samples each of batch.logits_rows on
  // rank 0's device as sampling.rows says: only the outputs (token and
  // logprobs) reach the host. With `logits`, the full-vocabulary logits
  // [rows, vocab] are copied back too (tests, debugging). A failing rank
  // aborts the others' collectives, so the call returns that rank's error
  // instead of hanging.
  absl::Status Step(const StepBatch& batch, const StepSampling& sampling, std::vector<SampleOutput>* outputs,
                    std::vector<float>* logits = nullptr);
  // Runs one step and returns only the logits of batch.logits_rows.
  absl::Status Step(const StepBatch& batch, std::vector<float>* logits);

  // Under MPI, on ranks other than 0: runs the steps rank 0 broadcasts until
  // rank 0's executor is destroyed (OK) or the job fails (its error).
  absl::Status ServeSteps();

  const ModelConfig& config() const { return config_; }
  const ShardPlan& plan() const { return plan_; }
  const ExecutorOptions& options() const { return options_; }
  int tp() const { return options_.tp; }
  // Per-rank accessors take a rank of this process (any rank without MPI).
  const Model& model(int rank) const { return *Local(rank).model; }
  // Bytes allocated for rank r's KV cache.
  int64_t KvCacheBytes(int rank) const;
  // Bytes of weight matrices rank r reads per decode step.
  int64_t WeightBytes(int rank) const { return Local(rank).model->weights().matrix_bytes; }
  std::string BackendName() const { return workers_[0]->backend->Name(); }
  // Bytes of weights locked in RAM (0 without options.mlock).
  int64_t LockedWeightBytes() const { return locked_bytes_; }

  // Makes `rank` fail its next step with `error` before running it.
  void InjectFaultForTesting(int rank, absl::Status error);

 private:
  struct Worker {
    int rank = 0;
    Backend* backend = nullptr;  // owned by the device group
    std::unique_ptr<Model> model;
    std::unique_ptr<KvCache> cache;
    std::thread thread;
    absl::Status result;
    absl::Status injected_fault;
    std::vector<float> logits;
    std::vector<SampleOutput> samples;
  };
  Executor() = default;
  const Worker& Local(int rank) const { return *workers_[options_.mpi != nullptr ? 0 : rank]; }
  absl::Status CreateThreaded();
  absl::Status CreateMpi();
  absl::Status SetUpRank(int rank);
  // --mlock on the CPU after loading: see ExecutorOptions::mlock.
  absl::Status NarrowLockToWeights();
  // The first failing rank's own error after a step or set-up (OK if none).
  absl::Status RootCause() const;
  absl::Status GuardedSetUpRank(int rank);  // SetUpRank, exceptions caught; aborts the group on failure
  void RunRank(Worker& w);
  void WorkerLoop(int rank);
  absl::Status RunStep(const StepBatch& batch, const StepSampling* sampling, bool want_logits);
  absl::Status RunMpiStep(const StepBatch& batch, const StepSampling* sampling, bool want_logits);
  void StopMpiRanks();  // rank 0 of a healthy MPI job: tells the other ranks to return from ServeSteps

  ModelConfig config_;
  ShardPlan plan_;
  ExecutorOptions options_;
  std::unique_ptr<Checkpoint> checkpoint_;
  int64_t locked_bytes_ = 0;
  std::unique_ptr<DeviceGroup> group_;
  std::vector<std::unique_ptr<Worker>> workers_;

  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  const StepBatch* batch_ = nullptr;
  const StepSampling* sampling_ = nullptr;
  bool want_logits_ = false;
  uint64_t step_generation_ = 0;
  int pending_ = 0;
  bool stopping_ = false;
};

}  // namespace gqa
