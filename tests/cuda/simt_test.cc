// The SIMT interpreter itself: thread indices, shared memory per block,
// barriers, warp shuffles and votes with CUDA's semantics, atomics; a race
// made visible by changing the thread schedule; and misuse (a divergent
// __syncthreads, a warp collective missing a lane) reported as a launch
// error instead of a hang; stream capture and graph replay.
#include <string>
#include <vector>

#include <cmath>
#include <random>

#include "kernels/cuda/cuda_compat.h"
#include "kernels/cuda/device_utils.cuh"
#include "tests/cuda/mini_test.h"

namespace {

__global__ void IndexKernel(int* out) {
  const int linear = threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y;
  const int block = blockIdx.x + blockIdx.y * gridDim.x;
  const int per_block = blockDim.x * blockDim.y * blockDim.z;
  out[block * per_block + linear] = block * 1000 + int(threadIdx.z) * 100 + int(threadIdx.y) * 10 + int(threadIdx.x);
}

TEST_CASE(ThreadAndBlockIndices) {
  const dim3 grid(3, 2), block(4, 3, 2);
  std::vector<int> out(6 * 24, -1);
  REQUIRE(gqa_cuda::Launch(IndexKernel, grid, block, nullptr, out.data()) == cudaSuccess);
  for (int b = 0; b < 6; ++b) {
    for (int z = 0; z < 2; ++z) {
      for (int y = 0; y < 3; ++y) {
        for (int x = 0; x < 4; ++x) CHECK(out[b * 24 + z * 12 + y * 4 + x] == b * 1000 + z * 100 + y * 10 + x);
      }
    }
  }
}

// Reverses 64 values through shared memory: correct only with the barrier.
__global__ void ReverseKernel(const int* in, int* out, bool with_barrier) {
  __shared__ int tile[64];
  const int t = threadIdx.x;
  tile[t] = in[blockIdx.x * 64 + t];
  if (with_barrier) __syncthreads();
  out[blockIdx.x * 64 + t] = tile[63 - t];
}

TEST_CASE(SharedMemoryAndBarrier) {
  std::vector<int> in(3 * 64), out(3 * 64, -1);
  for (int i = 0; i < 3 * 64; ++i) in[i] = i * 7 + 1;
  for (auto s : {gqa_sim::Schedule::kForward, gqa_sim::Schedule::kReverse, gqa_sim::Schedule::kShuffled}) {
    gqa_sim::SetSchedule(s, 3);
    REQUIRE(gqa_cuda::Launch(ReverseKernel, dim3(3), dim3(64), nullptr, in.data(), out.data(), true) == cudaSuccess);
    for (int b = 0; b < 3; ++b) {
      for (int t = 0; t < 64; ++t) CHECK(out[b * 64 + t] == in[b * 64 + 63 - t]);
    }
  }
  gqa_sim::SetSchedule(gqa_sim::Schedule::kForward);
}

TEST_CASE(AMissingBarrierIsARaceThatSchedulesExpose) {
  std::vector<int> in(64), forward(64), reverse(64);
  for (int i = 0; i < 64; ++i) in[i] = i + 100;
  gqa_sim::SetSchedule(gqa_sim::Schedule::kForward);
  // Poison the shared tile with a first launch so stale values differ.
  std::vector<int> other(64, 5);
  REQUIRE(gqa_cuda::Launch(ReverseKernel, dim3(1), dim3(64), nullptr, other.data(), forward.data(), true) == cudaSuccess);
  REQUIRE(gqa_cuda::Launch(ReverseKernel, dim3(1), dim3(64), nullptr, in.data(), forward.data(), false) == cudaSuccess);
  REQUIRE(gqa_cuda::Launch(ReverseKernel, dim3(1), dim3(64), nullptr, other.data(), reverse.data(), true) == cudaSuccess);
  gqa_sim::SetSchedule(gqa_sim::Schedule::kReverse);
  REQUIRE(gqa_cuda::Launch(ReverseKernel, dim3(1), dim3(64), nullptr, in.data(), reverse.data(), false) == cudaSuccess);
  gqa_sim::SetSchedule(gqa_sim::Schedule::kForward);
  CHECK(forward != reverse);
}

__global__ void ShuffleKernel(const float* in, float* out) {
  const int lane = threadIdx.x & 31;
  const float v = in[threadIdx.x];
  float sum = v;
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  const float from3 = __shfl_sync(0xffffffffu, v, 3);
  const float down = __shfl_down_sync(0xffffffffu, v, 1);
  const float up = __shfl_up_sync(0xffffffffu, v, 2);
  const float seg = __shfl_sync(0xffffffffu, v, 1, 8);  // lane 1 of each 8-lane segment
  const unsigned ballot = __ballot_sync(0xffffffffu, v > 0.0f);
  const int any = __any_sync(0xffffffffu, lane == 31);
  const int all = __all_sync(0xffffffffu, lane < 31);
  float* o = out + threadIdx.x * 8;
  o[0] = sum;
  o[1] = from3;
  o[2] = down;
  o[3] = up;
  o[4] = seg;
  o[5] = float(ballot & 0xffffu);
  o[6] = float(any);
  o[7] = float(all);
}

TEST_CASE(WarpShufflesAndVotes) {
  std::vector<float> in(64), out(64 * 8);
  for (int i = 0; i < 64; ++i) in[i] = float((i * 37) % 11) - 5.0f;
  REQUIRE(gqa_cuda::Launch(ShuffleKernel, dim3(1), dim3(64), nullptr, in.data(), out.data()) == cudaSuccess);
  for (int w = 0; w < 2; ++w) {
    float sum = 0;
    unsigned ballot = 0;
    for (int l = 0; l < 32; ++l) {
      sum += in[w * 32 + l];
      if (in[w * 32 + l] > 0) ballot |= 1u << l;
    }
    for (int l = 0; l < 32; ++l) {
      const float* o = out.data() + (w * 32 + l) * 8;
      CHECK(o[0] == sum);
      CHECK(o[1] == in[w * 32 + 3]);
      CHECK(o[2] == in[w * 32 + (l < 31 ? l + 1 : l)]);
      CHECK(o[3] == in[w * 32 + (l >= 2 ? l - 2 : l)]);
      CHECK(o[4] == in[w * 32 + (l & ~7) + 1]);
      CHECK(o[5] == float(ballot & 0xffffu));
      CHECK(o[6] == 1.0f);
      CHECK(o[7] == 0.0f);
    }
  }
}

__global__ void AtomicKernel(int* counter, float* sum) {
  atomicAdd(counter, 1);
  atomicAdd(sum, 0.5f);
}

TEST_CASE(Atomics) {
  int counter = 0;
  float sum = 0;
  REQUIRE(gqa_cuda::Launch(AtomicKernel, dim3(5), dim3(96), nullptr, &counter, &sum) == cudaSuccess);
  CHECK(counter == 5 * 96);
  CHECK(sum == 0.5f * 5 * 96);
}

__global__ void EarlyExitBarrierKernel(int* out) {
  if (threadIdx.x >= 16) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void TwoBarriersKernel(int* out) {
  if (threadIdx.x < 32) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

__global__ void MissingLaneKernel(float* out) {
  if (threadIdx.x == 5) return;
  out[threadIdx.x] = __shfl_sync(0xffffffffu, 1.0f, 0);
}

TEST_CASE(DivergentBarrierIsReportedNotDeadlocked) {
  std::vector<int> out(64);
  CHECK(gqa_cuda::Launch(EarlyExitBarrierKernel, dim3(2), dim3(64), nullptr, out.data()) == cudaErrorLaunchFailure);
  CHECK(cudaGetLastError() == cudaErrorLaunchFailure);
  CHECK_MSG(gqa_sim::LastLaunchMessage().find("divergent __syncthreads") != std::string::npos,
            gqa_sim::LastLaunchMessage());
  CHECK(cudaGetLastError() == cudaSuccess);  // cleared by the read

  CHECK(gqa_cuda::Launch(TwoBarriersKernel, dim3(1), dim3(64), nullptr, out.data()) == cudaErrorLaunchFailure);
  CHECK_MSG(gqa_sim::LastLaunchMessage().find("divergent __syncthreads") != std::string::npos,
            gqa_sim::LastLaunchMessage());
  cudaGetLastError();
}

TEST_CASE(WarpCollectiveWithAnExitedLaneIsReported) {
  std::vector<float> out(32);
  CHECK(gqa_cuda::Launch(MissingLaneKernel, dim3(1), dim3(32), nullptr, out.data()) == cudaErrorLaunchFailure);
  CHECK_MSG(gqa_sim::LastLaunchMessage().find("has exited") != std::string::npos, gqa_sim::LastLaunchMessage());
  cudaGetLastError();
}

TEST_CASE(AnInterpreterRunsAfterAFailedLaunch) {
  std::vector<int> out(6 * 24, -1);
  REQUIRE(gqa_cuda::Launch(IndexKernel, dim3(3, 2), dim3(4, 3, 2), nullptr, out.data()) == cudaSuccess);
  CHECK(out[5 * 24 + 23] == 5 * 1000 + 123);
}

TEST_CASE(OversizedBlockIsRefused) {
  std::vector<int> out(2048);
  CHECK(gqa_cuda::Launch(IndexKernel, dim3(1), dim3(2048), nullptr, out.data()) == cudaErrorInvalidConfiguration);
  cudaGetLastError();
}

// The interpreter's 16-bit types against the kernels' bit conversions and
// known values (round to nearest even, subnormals, overflow, NaN).
TEST_CASE(SixteenBitFloatTypes) {
  CHECK(__float2bfloat16(1.0f).x == 0x3f80);
  CHECK(__float2bfloat16(1.00390625f).x == 0x3f80);  // a tie rounds to even
  CHECK(__float2bfloat16(1.01171875f).x == 0x3f82);  // a tie rounds to even, upwards
  CHECK(__bfloat162float(__nv_bfloat16{0xc0a0}) == -5.0f);
  CHECK(__float2half(1.0f).x == 0x3c00);
  CHECK(__float2half(65504.0f).x == 0x7bff);
  CHECK(__float2half(1e6f).x == 0x7c00);
  CHECK(__float2half(5.960464477539063e-08f).x == 0x0001);
  CHECK(__half2float(__half{0x0001}) == 5.960464477539063e-08f);
  CHECK(__half2float(__half{0xc000}) == -2.0f);
  const float nan = __uint_as_float(0x7fc00000u);
  CHECK((__float2half(nan).x & 0x7c00) == 0x7c00 && (__float2half(nan).x & 0x3ff) != 0);
}

// One warp multiplies A (16x16) by B (16x8) on the emulated tensor core,
// each lane building its fragments from the matrices in the PTX ISA's
// layout; the product must be the plain one. A kernel with another layout
// would not be.
__global__ void MmaKernel(const float* A, const float* B, const float* C, float* D) {
  using gqa::cuda_sim::PackBf16x2;
  const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
  const uint32_t a[4] = {PackBf16x2(A[g * 16 + 2 * t], A[g * 16 + 2 * t + 1]),
                         PackBf16x2(A[(g + 8) * 16 + 2 * t], A[(g + 8) * 16 + 2 * t + 1]),
                         PackBf16x2(A[g * 16 + 2 * t + 8], A[g * 16 + 2 * t + 9]),
                         PackBf16x2(A[(g + 8) * 16 + 2 * t + 8], A[(g + 8) * 16 + 2 * t + 9])};
  const uint32_t b[2] = {PackBf16x2(B[(2 * t) * 8 + g], B[(2 * t + 1) * 8 + g]),
                         PackBf16x2(B[(2 * t + 8) * 8 + g], B[(2 * t + 9) * 8 + g])};
  const float c[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t], C[(g + 8) * 8 + 2 * t + 1]};
  float d[4];
  gqa::cuda_sim::MmaBf16(d, a, b, c);
  D[g * 8 + 2 * t] = d[0];
  D[g * 8 + 2 * t + 1] = d[1];
  D[(g + 8) * 8 + 2 * t] = d[2];
  D[(g + 8) * 8 + 2 * t + 1] = d[3];
}

TEST_CASE(TensorCoreFragmentsFollowThePtxLayout) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<float> A(256), B(128), C(128), D(128, std::nanf(""));
  // Values exact in bf16, so that the product is exact up to f32 sums.
  for (float& x : A) x = __bfloat162float(__float2bfloat16(normal(rng)));
  for (float& x : B) x = __bfloat162float(__float2bfloat16(normal(rng)));
  for (float& x : C) x = normal(rng);
  REQUIRE(gqa_cuda::Launch(MmaKernel, dim3(1), dim3(32), nullptr, A.data(), B.data(), C.data(), D.data()) ==
          cudaSuccess);
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 8; ++j) {
      double want = C[i * 8 + j];
      for (int k = 0; k < 16; ++k) want += double(A[i * 16 + k]) * B[k * 8 + j];
      CHECK_MSG(std::abs(D[i * 8 + j] - want) <= 1e-5 * (1 + std::abs(want)), "D[" << i << "][" << j << "] = "
                                                                                << D[i * 8 + j] << ", want " << want);
    }
  }
}

// out[i] = in[i] * scale + offset: `scale` is a kernel argument (copied at
// capture), `in` and `offset` are device memory (read at each replay).
__global__ void AxpyKernel(const float* in, float scale, const float* offset, float* out, int n) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) out[i] = in[i] * scale + *offset;
}

TEST_CASE(StreamCaptureRecordsAndGraphsReplay) {
  cudaStream_t s = nullptr;
  REQUIRE(cudaStreamCreate(&s) == cudaSuccess);
  const int n = 70;
  std::vector<float> in(n), out(n, -1.0f), copy(n, -1.0f), host(n, 2.0f);
  for (int i = 0; i < n; ++i) in[i] = float(i);
  float offset = 1.0f, scale = 3.0f;
  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  cudaStreamCaptureStatus status{};
  REQUIRE(cudaStreamIsCapturing(s, &status) == cudaSuccess);
  CHECK(status == cudaStreamCaptureStatusActive);
  REQUIRE(cudaMemcpyAsync(in.data(), host.data(), 4 * sizeof(float), cudaMemcpyDefault, s) == cudaSuccess);
  REQUIRE(gqa_cuda::Launch(AxpyKernel, dim3(3), dim3(32), s, in.data(), scale, &offset, out.data(), n) ==
          cudaSuccess);
  REQUIRE(cudaMemsetAsync(out.data() + n - 2, 0, 2 * sizeof(float), s) == cudaSuccess);
  REQUIRE(cudaMemcpyAsync(copy.data(), out.data(), n * sizeof(float), cudaMemcpyDeviceToDevice, s) == cudaSuccess);
  cudaGraph_t graph = nullptr;
  REQUIRE(cudaStreamEndCapture(s, &graph) == cudaSuccess);
  // Capture ran nothing.
  CHECK(in[0] == 0.0f && out[0] == -1.0f && copy[5] == -1.0f);
  cudaGraphExec_t exec = nullptr;
  REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  REQUIRE(cudaGraphDestroy(graph) == cudaSuccess);
  // The argument changes after capture: the replay keeps the captured
  // value; memory changes (offset, host) are seen.
  scale = 5.0f;
  for (int round = 0; round < 2; ++round) {
    offset = float(10 * round);
    for (float& h : host) h = float(100 + round);
    REQUIRE(cudaGraphLaunch(exec, s) == cudaSuccess);
    for (int i = 0; i < n; ++i) {
      const float x = i < 4 ? float(100 + round) : float(i);
      const float want = i >= n - 2 ? 0.0f : x * 3.0f + offset;
      CHECK_MSG(out[i] == want && copy[i] == want, "round " << round << " i " << i << ": " << out[i] << ", "
                                                          << copy[i] << ", want " << want);
    }
  }
  REQUIRE(cudaGraphExecDestroy(exec) == cudaSuccess);
  REQUIRE(cudaStreamDestroy(s) == cudaSuccess);
}

TEST_CASE(WaitingInsideACaptureInvalidatesIt) {
  cudaStream_t s = nullptr;
  REQUIRE(cudaStreamCreate(&s) == cudaSuccess);
  std::vector<float> in(32, 1.0f), out(32, 0.0f);
  float offset = 0.0f;
  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  REQUIRE(gqa_cuda::Launch(AxpyKernel, dim3(1), dim3(32), s, in.data(), 2.0f, &offset, out.data(), 32) ==
          cudaSuccess);
  CHECK(cudaStreamSynchronize(s) == cudaErrorStreamCaptureUnsupported);
  void* p = nullptr;
  CHECK(cudaMalloc(&p, 16) == cudaErrorStreamCaptureUnsupported);
  cudaStreamCaptureStatus status{};
  REQUIRE(cudaStreamIsCapturing(s, &status) == cudaSuccess);
  CHECK(status == cudaStreamCaptureStatusInvalidated);
  cudaGraph_t graph = nullptr;
  CHECK(cudaStreamEndCapture(s, &graph) == cudaErrorStreamCaptureInvalidated);
  CHECK(graph == nullptr);
  cudaGetLastError();
  // The stream works again, and nothing of the failed capture ran.
  CHECK(out[0] == 0.0f);
  REQUIRE(cudaStreamSynchronize(s) == cudaSuccess);
  REQUIRE(gqa_cuda::Launch(AxpyKernel, dim3(1), dim3(32), s, in.data(), 2.0f, &offset, out.data(), 32) ==
          cudaSuccess);
  CHECK(out[31] == 2.0f);
  REQUIRE(cudaStreamDestroy(s) == cudaSuccess);
}

TEST_CASE(AFailingNodeFailsTheGraphLaunch) {
  cudaStream_t s = nullptr;
  REQUIRE(cudaStreamCreate(&s) == cudaSuccess);
  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  int runs = 0;
  REQUIRE(gqa_sim::StreamHostCall(s, [&runs] { return ++runs == 2 ? std::string("second run fails") : std::string(); }) ==
          cudaSuccess);
  cudaGraph_t graph = nullptr;
  REQUIRE(cudaStreamEndCapture(s, &graph) == cudaSuccess);
  CHECK(runs == 0);
  cudaGraphExec_t exec = nullptr;
  REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  cudaGraphDestroy(graph);
  CHECK(cudaGraphLaunch(exec, s) == cudaSuccess);
  CHECK(cudaGraphLaunch(exec, s) == cudaErrorLaunchFailure);
  CHECK(gqa_sim::LastLaunchMessage().find("second run fails") != std::string::npos);
  cudaGetLastError();
  cudaGraphExecDestroy(exec);
  REQUIRE(cudaStreamDestroy(s) == cudaSuccess);
}

}  // namespace

int main(int argc, char** argv) { return mini_test::RunAll(argc, argv); }
