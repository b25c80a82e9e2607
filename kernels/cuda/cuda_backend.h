// The CUDA backend, in two builds of the same source: gqa::cuda on a real
// GPU (built when the CUDA toolkit is found) and gqa::cuda_sim, whose
// kernels run on the SIMT interpreter over host memory (always built;
// `--device cuda-sim`). Neither header pulls in CUDA.
#pragma once

#include <memory>

#include "kernels/backend.h"

namespace gqa {
namespace cuda {
// Device `device` with its own stream. Fails with a clear message where no
// CUDA device is present or the build has no CUDA backend.
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(int device);
// How many CUDA devices are visible, or why none can be used.
absl::StatusOr<int> DeviceCount();
}  // namespace cuda
namespace cuda_sim {
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(int device);
}  // namespace cuda_sim
}  // namespace gqa
