// Gemm on cuBLASLt. Row-major y[n, rows] = x[n, cols] w[rows, cols]^T is, in
// cuBLAS's column-major terms, Y'[rows, n] = W'^T X' with W' = the stored w
// read as [cols, rows] (ld = row_stride) and X' = x as [cols, n].
#include <cublasLt.h>

#include <map>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/gemm.h"
#include "kernels/dtype.h"

namespace gqa::GQA_CUDA_NS {
namespace {

constexpr size_t kWorkspaceBytes = 32 << 20;

absl::Status Check(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("cuBLASLt ", what, ": ", cublasLtGetStatusString(s)));
}

cudaDataType_t CudaType(DType t) {
  switch (t) {
    case DType::kF32: return CUDA_R_32F;
    case DType::kF16: return CUDA_R_16F;
    case DType::kBF16: return CUDA_R_16BF;
  }
  return CUDA_R_32F;
}

class CublasLtGemm final : public Gemm {
 public:
  CublasLtGemm(cublasLtHandle_t h, cudaStream_t s, void* ws) : handle_(h), stream_(s), workspace_(ws) {}
  ~CublasLtGemm() override {
    cudaFree(workspace_);
    cublasLtDestroy(handle_);
  }

  absl::Status Run(const void* x, int n, const MatrixView& w, float* y) override {
    if (n == 0 || w.rows == 0) return absl::OkStatus();
    const cudaDataType_t ab = CudaType(w.dtype);
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    absl::Status st = Check(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "MatmulDescCreate");
    const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    if (st.ok()) st = Check(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)), "TRANSA");
    if (st.ok()) st = Check(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)), "TRANSB");
    if (st.ok()) st = Check(cublasLtMatrixLayoutCreate(&a, ab, uint64_t(w.cols), uint64_t(w.rows), w.row_stride), "layout A");
    if (st.ok()) st = Check(cublasLtMatrixLayoutCreate(&b, ab, uint64_t(w.cols), uint64_t(n), w.cols), "layout B");
    if (st.ok()) st = Check(cublasLtMatrixLayoutCreate(&c, CUDA_R_32F, uint64_t(w.rows), uint64_t(n), w.rows), "layout C");
    cublasLtMatmulHeuristicResult_t heur{};
    if (st.ok()) st = Algo(op, a, b, c, w, n, &heur);
    const float alpha = 1.0f, beta = 0.0f;
    if (st.ok()) {
      st = Check(cublasLtMatmul(handle_, op, &alpha, w.data, a, x, b, &beta, y, c, y, c, &heur.algo, workspace_,
                                kWorkspaceBytes, stream_),
                 "Matmul");
    }
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
    return st;
  }

 private:
  // The heuristic's first choice, cached per shape.
  absl::Status Algo(cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                    cublasLtMatrixLayout_t c, const MatrixView& w, int n, cublasLtMatmulHeuristicResult_t* out) {
    const auto key = std::make_tuple(n, w.rows, w.cols, w.row_stride, int(w.dtype));
    if (auto it = algos_.find(key); it != algos_.end()) {
      *out = it->second;
      return absl::OkStatus();
    }
    cublasLtMatmulPreference_t pref = nullptr;
    RETURN_IF_ERROR(Check(cublasLtMatmulPreferenceCreate(&pref), "PreferenceCreate"));
    const size_t ws = kWorkspaceBytes;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
    int found = 0;
    const cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(handle_, op, a, b, c, c, pref, 1, out, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    RETURN_IF_ERROR(Check(s, "AlgoGetHeuristic"));
    if (found == 0) {
      return absl::InternalError(absl::StrCat("cuBLASLt has no algorithm for ", n, "x", w.cols, " * ", w.cols, "x",
                                              w.rows, " in ", DTypeName(w.dtype)));
    }
    algos_[key] = *out;
    return absl::OkStatus();
  }

  cublasLtHandle_t handle_;
  cudaStream_t stream_;
  void* workspace_;
  std::map<std::tuple<int, int64_t, int64_t, int64_t, int>, cublasLtMatmulHeuristicResult_t> algos_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Gemm>> Gemm::Create(cudaStream_t stream) {
  cublasLtHandle_t h = nullptr;
  RETURN_IF_ERROR(Check(cublasLtCreate(&h), "Create"));
  void* ws = nullptr;
  if (cudaMalloc(&ws, kWorkspaceBytes) != cudaSuccess) {
    cublasLtDestroy(h);
    return absl::ResourceExhaustedError("cuBLASLt workspace: cudaMalloc failed");
  }
  return std::unique_ptr<Gemm>(new CublasLtGemm(h, stream, ws));
}

}  // namespace gqa::GQA_CUDA_NS
