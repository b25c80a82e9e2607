// Builds an engine from its options: the model's config and shard plan, the
// KV cache's capacity (from worker/memory_plan's bytes per token), the
// executor with load progress on stderr, then the engine; and runs the life
// of an MPI rank other than 0. The programs turn their flags into these
// options (apps/engine_flags); nothing here parses a command line.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "engine/engine.h"
#include "worker/executor.h"
#include "worker/mpi_job.h"

namespace gqa {

struct EngineBuildOptions {
  std::string model_dir;  // config.json + safetensors
  // Device, TP degree, threads, block size, graphs, mlock, CPU activations.
  // The builder sets kv_dtype, num_kv_blocks, max_step_tokens,
  // max_step_seqs, load_counter and mpi itself.
  ExecutorOptions executor;
  // Under mpirun the job's size is the TP degree unless tp was given (then
  // the executor refuses a mismatch).
  bool tp_given = false;
  std::string kv_cache_dtype = "auto";  // f32, bf16, or auto: bf16 for a bfloat16 checkpoint
  int64_t num_kv_blocks = 0;            // 0: sized from kv_cache_memory
  int64_t kv_cache_memory = 0;          // bytes for the KV cache of all ranks; 0: min(4 GiB, 20% of available)
  EngineOptions engine;                 // max_model_len 0: the model's max_position_embeddings
  std::optional<uint64_t> seed;         // for requests without one; none: random, printed at start-up
  double rank_timeout_s = 3.0;          // MPI ranks: silence after which a rank counts as failed
};

// Seconds between heartbeats of an MPI job's ranks.
constexpr double kHeartbeatSeconds = 0.1;

// Opens the model, sizes the KV cache, logs the capacity to stderr and
// starts the engine. With `mpi`, on rank 0 of an MPI job: the engine's
// executor runs rank 0 and drives the other processes.
absl::StatusOr<std::unique_ptr<Engine>> BuildEngine(const EngineBuildOptions& options, MpiJob* mpi = nullptr);

// The whole life of an MPI rank other than 0: loads its shard with the same
// options as rank 0, then runs the steps rank 0 sends until rank 0 stops
// (returns 0). A failure ends the process with status 1 at once.
int ServeMpiRank(const EngineBuildOptions& options, MpiJob* mpi);

}  // namespace gqa
