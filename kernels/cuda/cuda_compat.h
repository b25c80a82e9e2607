// One include for CUDA sources that compile both ways: with nvcc against the
// real runtime, or with the host compiler against the SIMT interpreter
// (GQA_CUDA_SIM). It also names the namespace that holds each build's
// symbols, so that both can be linked into one program, and provides
// gqa_cuda::Launch, the one way kernels are launched.
#pragma once

#include <utility>

#if defined(GQA_CUDA_SIM)
#include "kernels/simt/cuda_sim.h"
#define GQA_CUDA_NS cuda_sim
#define GQA_UNROLL
#else
#include <cuda_runtime.h>
#define GQA_CUDA_NS cuda
#define GQA_UNROLL _Pragma("unroll")
#if defined(__CUDACC__)
namespace gqa_cuda {
template <typename... KArgs, typename... Args>
cudaError_t Launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, cudaStream_t stream, Args&&... args) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return cudaSuccess;  // nothing to run
  kernel<<<grid, block, 0, stream>>>(std::forward<Args>(args)...);
  return cudaGetLastError();
}
}  // namespace gqa_cuda
#endif
#endif
