// The CUDA runtime calls of the backend, over host memory: every copy is
// done when the call returns, so streams and synchronisation have nothing to
// wait for. Allocations are exact-sized so that AddressSanitizer catches a
// kernel that reads or writes past the end of a buffer.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

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

float __half2float(__half h) {
  const uint32_t sign = uint32_t(h.x & 0x8000u) << 16, exp = (h.x >> 10) & 0x1fu, man = h.x & 0x3ffu;
  if (exp == 0) return __uint_as_float(__float_as_uint(float(man) * (1.0f / 16777216.0f)) | sign);
  if (exp == 31) return __uint_as_float(sign | 0x7f800000u | (man << 13));
  return __uint_as_float(sign | ((exp + 112u) << 23) | (man << 13));
}

__half __float2half(float f) {
  const uint32_t u = __float_as_uint(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return {uint16_t(sign | 0x7e00u)};
  if (a >= 0x477ff000u) return {uint16_t(sign | 0x7c00u)};
  if (a < 0x38800000u) return {uint16_t(sign | uint32_t(std::nearbyint(__uint_as_float(a) * 16777216.0f)))};
  return {uint16_t(sign | ((a + 0xfffu + ((a >> 13) & 1u) - 0x38000000u) >> 13))};
}

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
