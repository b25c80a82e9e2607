// gqa-bench --mode attention: the attention op alone on a device. Decode
// (one new token per sequence, bf16 KV cache) over contexts, group sizes and
// batches, in GB/s against a device-to-device copy measured in the same
// run; causal prefill of one prompt in TFLOP/s.
#pragma once

#include "base/flags.h"

namespace gqa {

absl::Status RunAttentionBench(const Flags& f);

}  // namespace gqa
