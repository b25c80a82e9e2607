// gqa-bench --mode matmul: the CPU backend's matrix products alone, in
// GFLOP/s, for token counts from decode (1) to prefill chunks.
#pragma once

#include "absl/status/status.h"
#include "base/flags.h"

namespace gqa {

absl::Status RunMatMulBench(const Flags& f);

}  // namespace gqa
