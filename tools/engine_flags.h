// The flags that size the engine (TP degree, KV cache, batching), shared by
// the programs that run one, and building the engine from them.
#pragma once

#include <memory>

#include "server/engine.h"
#include "tools/flags.h"
#include "worker/mpi_job.h"

namespace gqa {

void AddEngineFlags(Flags& flags);

// Opens --model, sizes the KV cache from --num-kv-blocks or --kv-cache-memory
// (default: min(4 GiB, 20% of available memory)), logs the capacity to
// stderr, and starts the engine. With `mpi`, on rank 0 of an MPI job: the
// engine's executor runs rank 0 and drives the other processes.
absl::StatusOr<std::unique_ptr<Engine>> EngineFromFlags(const Flags& flags, MpiJob* mpi = nullptr);

// Seconds between heartbeats of an MPI job's ranks.
constexpr double kHeartbeatSeconds = 0.1;

// The whole life of an MPI rank other than 0: loads its shard with the same
// flags as rank 0, then runs the steps rank 0 sends until rank 0 stops
// (returns 0). A failure ends the process with status 1 at once.
int ServeMpiRank(const Flags& flags, MpiJob* mpi);

}  // namespace gqa
