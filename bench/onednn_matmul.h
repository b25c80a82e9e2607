// oneDNN's matrix product on the CPU, for gqa-bench --mode matmul to time
// beside the backend's own (built where Debian's libdnnl-dev is installed;
// the engine never uses it). Weights bf16, stored [rows][cols] row-major as
// in a checkpoint; activations f32, converted to bf16 by oneDNN on each call
// (its bf16 matmul takes bf16 sources: the numerics of
// --cpu-activations bf16, the default on AVX-512 BF16); output f32.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace gqa {

class OneDnnMatMul {
 public:
  virtual ~OneDnnMatMul() = default;
  static absl::StatusOr<std::unique_ptr<OneDnnMatMul>> Create(const uint16_t* w, int64_t rows, int64_t cols,
                                                              int threads);
  // Reorders the weights into the layout oneDNN picks for n tokens and
  // builds the primitives (untimed; once per token count, before Run).
  virtual absl::Status Prepare(int n) = 0;
  // y[t][r] = sum_k x[t][k] * w[r][k] for t < n; n was prepared.
  virtual void Run(const float* x, int n, float* y) = 0;
  // The ISA oneDNN dispatched to, and its version.
  virtual std::string Describe() const = 0;
};

}  // namespace gqa
