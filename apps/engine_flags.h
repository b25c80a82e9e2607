// The flags that size and build an engine (TP degree, KV cache, batching),
// shared by gqa-server and gqa-generate: they become EngineBuildOptions
// (engine/engine_builder.h), which builds the engine.
#pragma once

#include <memory>

#include "base/flags.h"
#include "engine/engine_builder.h"

namespace gqa {

void AddEngineFlags(Flags& flags);

// The options the flags say; a clear error naming the flag otherwise.
absl::StatusOr<EngineBuildOptions> EngineBuildOptionsFromFlags(const Flags& flags);

// BuildEngine with the flags' options.
absl::StatusOr<std::unique_ptr<Engine>> EngineFromFlags(const Flags& flags, MpiJob* mpi = nullptr);

// ServeMpiRank with the flags' options; flags it cannot take end the rank
// with status 1, as a failure to load would.
int ServeMpiRankFromFlags(const Flags& flags, MpiJob* mpi);

}  // namespace gqa
