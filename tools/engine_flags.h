// The flags that size the engine (TP degree, KV cache, batching), shared by
// the programs that run one, and building the engine from them.
#pragma once

#include <memory>

#include "server/engine.h"
#include "tools/flags.h"

namespace gqa {

void AddEngineFlags(Flags& flags);

// Opens --model, sizes the KV cache from --num-kv-blocks or --kv-cache-memory
// (default: min(4 GiB, 20% of available memory)), logs the capacity to
// stderr, and starts the engine.
absl::StatusOr<std::unique_ptr<Engine>> EngineFromFlags(const Flags& flags);

}  // namespace gqa
