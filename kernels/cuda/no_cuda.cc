// The CUDA backend of a build configured without the CUDA toolkit.
#include "kernels/cuda/cuda_backend.h"

namespace gqa::cuda {

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(int) {
  return absl::FailedPreconditionError(
      "--device cuda: this build has no CUDA backend (configured without the CUDA toolkit, cuBLASLt and NCCL; "
      "--device cuda-sim runs the same kernels on the CPU)");
}

absl::StatusOr<int> DeviceCount() {
  return absl::FailedPreconditionError("this build has no CUDA backend");
}

}  // namespace gqa::cuda
