// The CUDA runtime calls of the backend, over host memory: every copy is
// done when the call returns, so streams and synchronisation have nothing to
// wait for. Allocations are exact-sized so that AddressSanitizer catches a
// kernel that reads or writes past the end of a buffer.
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/sim/cuda_sim.h"

struct GqaSimStream {
  int device = 0;
};

namespace {
thread_local cudaError_t t_last_error = cudaSuccess;
thread_local std::string t_last_message;
thread_local int t_device = 0;

cudaError_t Fail(cudaError_t e, const char* why) {
  gqa_sim::SetLastError(e, why);
  return e;
}
}  // namespace

namespace gqa_sim {
const std::string& LastLaunchMessage() { return t_last_message; }
void SetLastError(cudaError_t e, std::string message) {
  t_last_error = e;
  t_last_message = std::move(message);
}
}  // namespace gqa_sim

float __bfloat162float(__nv_bfloat16 h) { return gqa::cpu::Bf16ToFloat(h.x); }
__nv_bfloat16 __float2bfloat16(float f) { return {gqa::cpu::FloatToBf16(f)}; }
float __half2float(__half h) { return gqa::cpu::F16ToFloat(h.x); }
__half __float2half(float f) { return {gqa::cpu::FloatToF16(f)}; }

cudaError_t cudaGetDeviceCount(int* count) {
  *count = kGqaSimDeviceCount;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= kGqaSimDeviceCount) return Fail(cudaErrorInvalidDevice, "no such simulated device");
  t_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  *device = t_device;
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** p, size_t bytes) {
  *p = std::malloc(bytes == 0 ? 1 : bytes);
  return *p == nullptr ? Fail(cudaErrorMemoryAllocation, "out of host memory") : cudaSuccess;
}

cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}

cudaError_t cudaMallocHost(void** p, size_t bytes) { return cudaMalloc(p, bytes); }
cudaError_t cudaFreeHost(void* p) { return cudaFree(p); }

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  if (bytes > 0) std::memmove(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemcpy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                         cudaMemcpyKind) {
  for (size_t r = 0; r < height; ++r) {
    std::memcpy(static_cast<char*>(dst) + r * dpitch, static_cast<const char*>(src) + r * spitch, width);
  }
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
  return cudaMemcpy(dst, src, bytes, kind);
}

cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t) {
  if (bytes > 0) std::memset(dst, value, bytes);
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* s) {
  *s = new GqaSimStream{t_device};
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete s;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

cudaError_t cudaGetLastError() {
  const cudaError_t e = t_last_error;
  t_last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError() { return t_last_error; }

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unknown error";
}
