// The subset of CUDA C++ that gqa-serve's kernels and backend use, for the
// host compiler: kernel qualifiers, thread indices, barriers, warp
// collectives, atomics, bit casts, math, and the runtime API calls of the
// backend (memory, copies, streams, errors) over host memory. Included only
// through kernels/cuda/cuda_compat.h when GQA_CUDA_SIM is defined.
#pragma once

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "kernels/simt/simt.h"

// ---- kernel source vocabulary ----
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __restrict__ __restrict
#define __shared__ static thread_local

using dim3 = gqa_sim::Dim3;
using uint3 = gqa_sim::Uint3;

#define threadIdx (::gqa_sim::ThreadIdx())
#define blockIdx (::gqa_sim::BlockIdx())
#define blockDim (::gqa_sim::BlockDim())
#define gridDim (::gqa_sim::GridDim())
#define __syncthreads() ::gqa_sim::SyncThreads(__FILE__, __LINE__)
constexpr int warpSize = 32;

inline void __syncwarp(unsigned mask = 0xffffffffu) { gqa_sim::WarpSync(mask); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// Shuffles: width splits the warp into segments of `width` lanes, as in CUDA.
template <typename T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  const int lane = gqa_sim::LaneId();
  const int base = lane & ~(width - 1);
  return gqa_sim::BitCast64<T>(gqa_sim::WarpExchange(mask, gqa_sim::ToBits64(v), base + (src & (width - 1))));
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  const int lane = gqa_sim::LaneId();
  int src = lane ^ lane_mask;
  if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;  // outside the segment: own value
  return gqa_sim::BitCast64<T>(gqa_sim::WarpExchange(mask, gqa_sim::ToBits64(v), src));
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = gqa_sim::LaneId();
  int src = lane + int(delta);
  if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;
  return gqa_sim::BitCast64<T>(gqa_sim::WarpExchange(mask, gqa_sim::ToBits64(v), src));
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = gqa_sim::LaneId();
  int src = lane - int(delta);
  if (src < (lane & ~(width - 1))) src = lane;
  return gqa_sim::BitCast64<T>(gqa_sim::WarpExchange(mask, gqa_sim::ToBits64(v), src));
}
inline unsigned __ballot_sync(unsigned mask, int pred) { return gqa_sim::WarpBallot(mask, pred != 0); }
inline int __any_sync(unsigned mask, int pred) { return gqa_sim::WarpBallot(mask, pred != 0) != 0; }
inline int __all_sync(unsigned mask, int pred) { return gqa_sim::WarpBallot(mask, pred != 0) == mask; }

// ---- atomics (blocks may one day run on several OS threads) ----
template <typename T>
T atomicAdd(T* p, T v) { return std::atomic_ref<T>(*p).fetch_add(v); }
inline float atomicAdd(float* p, float v) {
  std::atomic_ref<float> a(*p);
  float old = a.load();
  while (!a.compare_exchange_weak(old, old + v)) {
  }
  return old;
}
template <typename T>
T atomicMax(T* p, T v) {
  std::atomic_ref<T> a(*p);
  T old = a.load();
  while (old < v && !a.compare_exchange_weak(old, v)) {
  }
  return old;
}
template <typename T>
T atomicMin(T* p, T v) {
  std::atomic_ref<T> a(*p);
  T old = a.load();
  while (old > v && !a.compare_exchange_weak(old, v)) {
  }
  return old;
}
template <typename T>
T atomicCAS(T* p, T compare, T v) {
  std::atomic_ref<T>(*p).compare_exchange_strong(compare, v);
  return compare;
}
template <typename T>
T atomicExch(T* p, T v) { return std::atomic_ref<T>(*p).exchange(v); }

// ---- bit casts and math intrinsics ----
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline int __float_as_int(float f) { int u; std::memcpy(&u, &f, 4); return u; }
inline float __int_as_float(int u) { float f; std::memcpy(&f, &u, 4); return f; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(unsigned x) { return __builtin_ffs(int(x)); }
inline int __clz(unsigned x) { return x == 0 ? 32 : __builtin_clz(x); }
using std::isinf;
using std::isnan;

// ---- 16-bit float types (cuda_bf16.h / cuda_fp16.h), bits and conversions ----
struct __nv_bfloat16 {
  uint16_t x;
};
struct __half {
  uint16_t x;
};
// The CPU backend's conversions (kernels/dtype.cc): round to nearest
// even, subnormals, overflow to infinity, NaN kept.
float __bfloat162float(__nv_bfloat16 h);
__nv_bfloat16 __float2bfloat16(float f);
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
float __half2float(__half h);
__half __float2half(float f);
inline __half __float2half_rn(float f) { return __float2half(f); }

// ---- runtime API over host memory ----
enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorLaunchFailure = 719,
  cudaErrorIllegalState = 401,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorStreamCaptureInvalidated = 901,
  cudaErrorStreamCaptureWrongThread = 908,
};
enum cudaMemcpyKind : int {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};
struct GqaSimStream;
using cudaStream_t = GqaSimStream*;
// CUDA graphs: a capture records the stream's launches, copies and memsets
// (and the host calls of gqa_sim::StreamHostCall) into a graph; an
// instantiated graph replays the recorded list in order on cudaGraphLaunch.
struct GqaSimGraph;
using cudaGraph_t = GqaSimGraph*;
using cudaGraphExec_t = GqaSimGraph*;
enum cudaStreamCaptureMode : int {
  cudaStreamCaptureModeGlobal = 0,
  cudaStreamCaptureModeThreadLocal = 1,
  cudaStreamCaptureModeRelaxed = 2,
};
enum cudaStreamCaptureStatus : int {
  cudaStreamCaptureStatusNone = 0,
  cudaStreamCaptureStatusActive = 1,
  cudaStreamCaptureStatusInvalidated = 2,
};

// Simulated devices: any device number below this is valid.
constexpr int kGqaSimDeviceCount = 64;

cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaMalloc(void** p, size_t bytes);
template <typename T>
cudaError_t cudaMalloc(T** p, size_t bytes) { return cudaMalloc(reinterpret_cast<void**>(p), bytes); }
cudaError_t cudaFree(void* p);
cudaError_t cudaMallocHost(void** p, size_t bytes);
template <typename T>
cudaError_t cudaMallocHost(T** p, size_t bytes) { return cudaMallocHost(reinterpret_cast<void**>(p), bytes); }
cudaError_t cudaFreeHost(void* p);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                         cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s);
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t s);
cudaError_t cudaStreamCreate(cudaStream_t* s);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaDeviceSynchronize();
// While a stream is captured, nothing is run on it; calls that would wait
// for the device (synchronisation, synchronous copies, allocation) fail on
// the capturing thread and invalidate the capture, as in CUDA's
// cudaStreamCaptureModeThreadLocal (the only mode the interpreter accepts
// besides Relaxed, which allows allocation).
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* graph);
cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus* status);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long flags = 0);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
// Returns and clears the calling thread's last error, as CUDA does.
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t e);

namespace gqa_sim {
// What the last failed launch on this thread reported (empty if none).
const std::string& LastLaunchMessage();
void SetLastError(cudaError_t e, std::string message);
// Whether work enqueued on s is being recorded into a graph.
bool Capturing(cudaStream_t s);
// Records a node into s's capture: run() is what a replay executes; it
// returns an empty string or what went wrong.
cudaError_t RecordNode(cudaStream_t s, Dim3 grid, Dim3 block, std::function<std::string()> run);
// Host work in stream order: run now, or recorded and run at every replay
// while s is captured. The interpreter's GEMM and its stand-in for NCCL go
// through this, so that they are part of a replayed graph as cuBLASLt and
// NCCL kernels are on a GPU.
cudaError_t StreamHostCall(cudaStream_t s, std::function<std::string()> run);
}  // namespace gqa_sim

namespace gqa_cuda {
// Kernel launch: nvcc's <<<grid, block, 0, stream>>> under nvcc; here the
// interpreter runs the grid at once (the stream is in order by construction).
// While the stream is captured, the launch is recorded with its arguments
// converted to the kernel's parameter types and copied, as CUDA copies a
// captured kernel's parameters: a replay sees the values of capture time.
template <typename... KArgs, typename... Args>
cudaError_t Launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, cudaStream_t stream, Args&&... args) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return cudaSuccess;  // nothing to run
  if (block.x * block.y * block.z == 0 || block.x * block.y * block.z > 1024) {
    gqa_sim::SetLastError(cudaErrorInvalidConfiguration, "block of more than 1024 threads or of none");
    return cudaErrorInvalidConfiguration;
  }
  if (gqa_sim::Capturing(stream)) {
    std::tuple<std::decay_t<KArgs>...> params(std::forward<Args>(args)...);
    return gqa_sim::RecordNode(stream, grid, block, [kernel, grid, block, params]() {
      return gqa_sim::RunGrid(grid, block, [&] { std::apply(kernel, params); });
    });
  }
  std::string err = gqa_sim::RunGrid(grid, block, [&] { kernel(args...); });
  if (!err.empty()) {
    gqa_sim::SetLastError(cudaErrorLaunchFailure, std::move(err));
    return cudaErrorLaunchFailure;
  }
  return cudaSuccess;
}
}  // namespace gqa_cuda
