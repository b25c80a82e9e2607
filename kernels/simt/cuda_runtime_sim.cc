// The CUDA runtime calls of the backend, over host memory: every copy is
// done when the call returns, so streams and synchronisation have nothing to
// wait for. Allocations are exact-sized so that AddressSanitizer catches a
// kernel that reads or writes past the end of a buffer.
//
// Stream capture (CUDA graphs): while a stream is captured its launches,
// asynchronous copies and memsets (and StreamHostCall work) are recorded,
// not run; a graph launch runs the recorded nodes in order. Calls that would
// wait for the device fail on a capturing thread and invalidate the capture,
// as in CUDA, so code that syncs or allocates inside a capture fails here too.
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/dtype.h"
#include "kernels/simt/cuda_sim.h"

struct GqaSimGraph {
  struct Node {
    gqa_sim::Dim3 grid, block;  // 1 x 1 for copies and host work
    std::function<std::string()> run;
  };
  std::vector<Node> nodes;
};

struct GqaSimStream {
  int device = 0;
  // While captured: the graph being recorded, the capturing thread's
  // mode, and whether an unsupported call has invalidated the capture.
  GqaSimGraph* capture = nullptr;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeThreadLocal;
  bool invalidated = false;
};

namespace {
thread_local cudaError_t t_last_error = cudaSuccess;
thread_local std::string t_last_message;
thread_local int t_device = 0;
// The streams this thread is capturing (all of them are invalidated by an
// unsafe call made on this thread).
thread_local std::vector<GqaSimStream*> t_capturing;

cudaError_t Fail(cudaError_t e, const char* why) {
  gqa_sim::SetLastError(e, why);
  return e;
}

// An unsafe call (one that would wait for the device) on a thread that is
// capturing: CUDA refuses it and invalidates the capture. `relaxed_ok`:
// allowed under cudaStreamCaptureModeRelaxed (allocation).
bool UnsafeDuringCapture(bool relaxed_ok = false) {
  bool refused = false;
  for (GqaSimStream* s : t_capturing) {
    if (relaxed_ok && s->mode == cudaStreamCaptureModeRelaxed) continue;
    s->invalidated = true;
    refused = true;
  }
  return refused;
}
}  // namespace

namespace gqa_sim {
const std::string& LastLaunchMessage() { return t_last_message; }
void SetLastError(cudaError_t e, std::string message) {
  t_last_error = e;
  t_last_message = std::move(message);
}

bool Capturing(cudaStream_t s) { return s != nullptr && s->capture != nullptr; }

cudaError_t RecordNode(cudaStream_t s, Dim3 grid, Dim3 block, std::function<std::string()> run) {
  if (!Capturing(s)) return Fail(cudaErrorInvalidValue, "RecordNode on a stream that is not captured");
  if (s->invalidated) return Fail(cudaErrorStreamCaptureInvalidated, "the stream's capture was invalidated");
  s->capture->nodes.push_back(GqaSimGraph::Node{grid, block, std::move(run)});
  return cudaSuccess;
}

cudaError_t StreamHostCall(cudaStream_t s, std::function<std::string()> run) {
  if (Capturing(s)) return RecordNode(s, Dim3(), Dim3(), std::move(run));
  std::string err = run();
  if (err.empty()) return cudaSuccess;
  SetLastError(cudaErrorLaunchFailure, std::move(err));
  return cudaErrorLaunchFailure;
}
}  // namespace gqa_sim

float __bfloat162float(__nv_bfloat16 h) { return gqa::Bf16ToFloat(h.x); }
__nv_bfloat16 __float2bfloat16(float f) { return {gqa::FloatToBf16(f)}; }
float __half2float(__half h) { return gqa::F16ToFloat(h.x); }
__half __float2half(float f) { return {gqa::FloatToF16(f)}; }

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
  if (UnsafeDuringCapture(true)) return Fail(cudaErrorStreamCaptureUnsupported, "cudaMalloc while capturing");
  *p = std::malloc(bytes == 0 ? 1 : bytes);
  return *p == nullptr ? Fail(cudaErrorMemoryAllocation, "out of host memory") : cudaSuccess;
}

cudaError_t cudaFree(void* p) {
  if (UnsafeDuringCapture(true)) return Fail(cudaErrorStreamCaptureUnsupported, "cudaFree while capturing");
  std::free(p);
  return cudaSuccess;
}

cudaError_t cudaMallocHost(void** p, size_t bytes) { return cudaMalloc(p, bytes); }
cudaError_t cudaFreeHost(void* p) { return cudaFree(p); }

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  if (UnsafeDuringCapture()) return Fail(cudaErrorStreamCaptureUnsupported, "cudaMemcpy while capturing");
  if (bytes > 0) std::memmove(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemcpy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                         cudaMemcpyKind) {
  if (UnsafeDuringCapture()) return Fail(cudaErrorStreamCaptureUnsupported, "cudaMemcpy2D while capturing");
  for (size_t r = 0; r < height; ++r) {
    std::memcpy(static_cast<char*>(dst) + r * dpitch, static_cast<const char*>(src) + r * spitch, width);
  }
  return cudaSuccess;
}

// Captured, a copy reads its source when the graph runs, as on a GPU.
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t s) {
  if (gqa_sim::Capturing(s)) {
    return gqa_sim::RecordNode(s, gqa_sim::Dim3(), gqa_sim::Dim3(), [dst, src, bytes]() {
      if (bytes > 0) std::memmove(dst, src, bytes);
      return std::string();
    });
  }
  if (bytes > 0) std::memmove(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t s) {
  if (gqa_sim::Capturing(s)) {
    return gqa_sim::RecordNode(s, gqa_sim::Dim3(), gqa_sim::Dim3(), [dst, value, bytes]() {
      if (bytes > 0) std::memset(dst, value, bytes);
      return std::string();
    });
  }
  if (bytes > 0) std::memset(dst, value, bytes);
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* s) {
  *s = new GqaSimStream{t_device};
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s) {
  if (s != nullptr && s->capture != nullptr) return Fail(cudaErrorStreamCaptureUnsupported, "stream is capturing");
  delete s;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t) {
  if (UnsafeDuringCapture()) return Fail(cudaErrorStreamCaptureUnsupported, "cudaStreamSynchronize while capturing");
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() {
  if (UnsafeDuringCapture()) return Fail(cudaErrorStreamCaptureUnsupported, "cudaDeviceSynchronize while capturing");
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode) {
  if (s == nullptr) return Fail(cudaErrorStreamCaptureUnsupported, "the legacy stream cannot be captured");
  if (s->capture != nullptr) return Fail(cudaErrorIllegalState, "the stream is already capturing");
  if (mode == cudaStreamCaptureModeGlobal) {
    // Global mode would forbid unsafe calls on every thread; the backend
    // uses ThreadLocal (NCCL's advice for one thread per GPU).
    return Fail(cudaErrorInvalidValue, "the interpreter supports ThreadLocal and Relaxed capture only");
  }
  s->capture = new GqaSimGraph();
  s->mode = mode;
  s->invalidated = false;
  t_capturing.push_back(s);
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* graph) {
  *graph = nullptr;
  if (s == nullptr || s->capture == nullptr) return Fail(cudaErrorIllegalState, "the stream is not capturing");
  bool mine = false;
  for (size_t i = 0; i < t_capturing.size(); ++i) {
    if (t_capturing[i] == s) {
      t_capturing.erase(t_capturing.begin() + long(i));
      mine = true;
      break;
    }
  }
  GqaSimGraph* g = s->capture;
  s->capture = nullptr;
  if (!mine) {
    delete g;
    return Fail(cudaErrorStreamCaptureWrongThread, "capture ended on another thread than it began");
  }
  if (s->invalidated) {
    delete g;
    s->invalidated = false;
    return Fail(cudaErrorStreamCaptureInvalidated, "an unsupported call invalidated the capture");
  }
  *graph = g;
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus* status) {
  *status = s == nullptr || s->capture == nullptr ? cudaStreamCaptureStatusNone
            : s->invalidated                       ? cudaStreamCaptureStatusInvalidated
                                                   : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

// The executable graph is a copy of the recorded one: later changes to the
// graph do not affect it, as in CUDA.
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (graph == nullptr) return Fail(cudaErrorInvalidValue, "no graph");
  *exec = new GqaSimGraph(*graph);
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
  if (exec == nullptr) return Fail(cudaErrorInvalidValue, "no graph");
  if (gqa_sim::Capturing(s)) {
    return Fail(cudaErrorStreamCaptureUnsupported, "the interpreter does not capture graph launches");
  }
  for (const GqaSimGraph::Node& n : exec->nodes) {
    std::string err = n.run();
    if (!err.empty()) {
      gqa_sim::SetLastError(cudaErrorLaunchFailure, "in a graph: " + err);
      return cudaErrorLaunchFailure;
    }
  }
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}

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
    case cudaErrorIllegalState: return "the operation is not permitted in the current state";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureWrongThread: return "attempt to terminate a thread-local capture sequence from another thread";
  }
  return "unknown error";
}
