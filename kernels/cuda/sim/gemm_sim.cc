// Gemm under the interpreter: cuBLASLt's contract (16-bit A and B widened
// exactly, f32 accumulation, f32 output) computed by the CPU backend's
// matrix kernel on the calling thread, in stream order: while the stream is
// captured the product is recorded and runs at each replay of the graph.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/gemm.h"

namespace gqa::GQA_CUDA_NS {
namespace {

class SimGemm final : public Gemm {
 public:
  explicit SimGemm(cudaStream_t stream) : stream_(stream) {}

  absl::Status Run(const void* x, int n, const MatrixView& w, float* y) override {
    const cudaError_t e = gqa_sim::StreamHostCall(stream_, [this, x, n, w, y]() {
      Compute(x, n, w, y);
      return std::string();
    });
    if (e != cudaSuccess) return absl::InternalError(absl::StrCat("gemm: ", cudaGetErrorString(e)));
    return absl::OkStatus();
  }

 private:
  void Compute(const void* x, int n, const MatrixView& w, float* y) {
    const int64_t count = int64_t{n} * w.cols;
    const float* xf = static_cast<const float*>(x);
    if (w.dtype != DType::kF32) {
      widened_.resize(size_t(count));
      const uint16_t* h = static_cast<const uint16_t*>(x);
      for (int64_t i = 0; i < count; ++i) {
        widened_[i] = w.dtype == DType::kBF16 ? gqa::Bf16ToFloat(h[i]) : gqa::F16ToFloat(h[i]);
      }
      xf = widened_.data();
    }
    cpu::MatMulRows(xf, n, w, nullptr, y, 0, w.rows);
  }

  cudaStream_t stream_;
  std::vector<float> widened_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Gemm>> Gemm::Create(cudaStream_t stream) {
  return std::unique_ptr<Gemm>(new SimGemm(stream));
}

}  // namespace gqa::GQA_CUDA_NS
