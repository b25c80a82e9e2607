// y[n, w.rows] = x[n, w.cols] * w^T in f32 accumulation with an f32 output.
// For f32 weights x is f32; for f16/bf16 weights x holds the activations
// already rounded to the weight's type (LaunchRoundTo), as cuBLASLt takes A
// and B of one 16-bit type with C/D in f32. On a GPU this is cuBLASLt
// (gemm_cublaslt.cc); under the interpreter a CPU GEMM with the same
// contract (gemm_sim.cc).
#pragma once

#include <memory>

#include "base/common.h"
#include "kernels/cuda/cuda_compat.h"
#include "kernels/op_types.h"

namespace gqa::GQA_CUDA_NS {

class Gemm {
 public:
  static absl::StatusOr<std::unique_ptr<Gemm>> Create(cudaStream_t stream);
  virtual ~Gemm() = default;
  virtual absl::Status Run(const void* x, int n, const MatrixView& w, float* y) = 0;
};

}  // namespace gqa::GQA_CUDA_NS
