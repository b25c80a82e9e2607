// Backend on one CUDA device and one stream: the kernels of ops.cu, GEMMs
// through Gemm (cuBLASLt), KV cache head-major. Compiled twice: against the
// CUDA runtime (namespace gqa::cuda) and against the interpreter
// (gqa::cuda_sim, GQA_CUDA_SIM). Every runtime call and launch is checked;
// the first error is kept and returned by the next Synchronize(), so a
// device error fails the step instead of aborting the process.
#include "kernels/cuda/cuda_backend.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/sampling.h"

namespace gqa::GQA_CUDA_NS {
namespace {

#if defined(GQA_CUDA_SIM)
constexpr const char* kKind = "cuda-sim";
std::string LaunchDetail() {
  const std::string& m = gqa_sim::LastLaunchMessage();
  return m.empty() ? std::string() : absl::StrCat(" (", m, ")");
}
#else
constexpr const char* kKind = "cuda";
std::string LaunchDetail() { return {}; }
#endif

// Pinned host memory through which small host data (the step's metadata,
// the attention plan) goes to the device in one asynchronous copy. The
// stream is drained before the buffer is rewritten, since the previous copy
// may still be reading it.
class PinnedStaging {
 public:
  ~PinnedStaging() { Free(); }
  // Makes room for `bytes` (after draining the stream, which may still read
  // the old buffer).
  cudaError_t Reserve(size_t bytes, cudaStream_t stream) {
    if (bytes <= bytes_) return cudaSuccess;
    const cudaError_t e = cudaStreamSynchronize(stream);
    if (e != cudaSuccess) return e;
    Free();
    const cudaError_t a = cudaMallocHost(&data_, bytes);
    if (a == cudaSuccess) bytes_ = bytes;
    return a;
  }
  // Copies bytes of host to device (asynchronously on stream), growing the
  // buffer when needed.
  cudaError_t Upload(void* device, const void* host, size_t bytes, cudaStream_t stream) {
    if (bytes == 0) return cudaSuccess;
    cudaError_t e = Reserve(bytes, stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(stream);  // the previous upload may still read it
    if (e != cudaSuccess) return e;
    std::memcpy(data_, host, bytes);
    return cudaMemcpyAsync(device, data_, bytes, cudaMemcpyHostToDevice, stream);
  }

 private:
  void Free() {
    if (data_ != nullptr) cudaFreeHost(data_);
    data_ = nullptr;
    bytes_ = 0;
  }
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// The specialised attention's plan of one step: the launch arguments of
// its decode items and prefill tiles (uploaded into the backend's plan
// buffer), or none: the generic kernel.
struct CudaAttentionPlan final : AttentionPlan {
  CudaAttentionPlan(const void* owner, int num_tokens) : AttentionPlan(owner, num_tokens) {}
  bool specialised = false;
  AttentionRun run;
};

class CudaBackend final : public Backend, public GraphCapture {
 public:
  CudaBackend(int device, cudaStream_t stream, std::unique_ptr<Gemm> gemm)
      : device_(device), stream_(stream), gemm_(std::move(gemm)) {}
  ~CudaBackend() override {
    cudaStreamSynchronize(stream_);
    for (cudaGraphExec_t g : graphs_) cudaGraphExecDestroy(g);
    retired_scratch_.clear();
    scratch_.Reset();
    gemm_.reset();
    cudaStreamDestroy(stream_);
  }

  std::string Name() const override {
#if defined(GQA_CUDA_SIM)
    return absl::StrCat(kKind, "(device ", device_, ", SIMT interpreter)");
#else
    cudaDeviceProp prop{};
    cudaGetDeviceProperties(&prop, device_);
    return absl::StrCat(kKind, "(device ", device_, ": ", prop.name, ", sm_", prop.major, prop.minor, ")");
#endif
  }

  absl::StatusOr<DeviceBuffer> Allocate(size_t bytes) override {
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes == 0 ? 1 : bytes);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return absl::ResourceExhaustedError(absl::StrCat(kKind, " device ", device_, ": cannot allocate ", bytes,
                                                       " bytes: ", cudaGetErrorString(e)));
    }
    return DeviceBuffer(p, bytes, [](void* q) { cudaFree(q); });
  }

  absl::StatusOr<DeviceBuffer> ImportHost(const void* host, size_t bytes) override {
    ASSIGN_OR_RETURN(DeviceBuffer b, Allocate(bytes));
    RETURN_IF_ERROR(Status(cudaMemcpy(b.data(), host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy"));
    return b;
  }

  // The device copy is packed (row_stride = cols).
  absl::StatusOr<DeviceBuffer> ImportHostMatrix(const MatrixView& host, MatrixView* device) override {
    const size_t elem = DTypeSize(host.dtype);
    const size_t row_bytes = size_t(host.cols) * elem;
    ASSIGN_OR_RETURN(DeviceBuffer b, Allocate(row_bytes * size_t(host.rows)));
    if (host.rows > 0 && row_bytes > 0) {
      RETURN_IF_ERROR(Status(cudaMemcpy2D(b.data(), row_bytes, host.data, size_t(host.row_stride) * elem, row_bytes,
                                          size_t(host.rows), cudaMemcpyHostToDevice),
                             "cudaMemcpy2D"));
    }
    *device = MatrixView{b.data(), host.dtype, host.rows, host.cols, host.cols};
    return b;
  }

  void CopyToDevice(void* dst, const void* src, size_t bytes) override {
    Record(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_), "copy to device");
    // The source may be pageable memory that dies when this returns.
    Record(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }
  void CopyToHost(void* dst, const void* src, size_t bytes) override {
    Record(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_), "copy to host");
  }
  void CopyDeviceToDevice(void* dst, const void* src, size_t bytes) override {
    Record(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_), "device copy");
  }

  absl::Status Synchronize() override {
    Record(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    absl::Status st = std::move(error_);
    error_ = absl::OkStatus();
    return st;
  }

  absl::Status MakeCurrent() override { return Status(cudaSetDevice(device_), "cudaSetDevice"); }
  void* NativeStream() const override { return stream_; }

  KvCacheLayout KvLayout(int num_blocks, int block_size, int num_kv_heads, int head_dim, DType dtype) const override {
    return KvCacheLayout{num_blocks, block_size, num_kv_heads, head_dim, dtype, true};
  }

  absl::Status ReserveAttention(int max_tokens, int max_seqs, const AttentionShape& shape) override {
    if (!SpecialisedAttention(shape, KvLayout(1, 16, shape.num_kv_heads, shape.head_dim, DType::kF32))) {
      return absl::OkStatus();  // the generic kernel needs no plan
    }
    // Split slots: enough for every sequence to split a few ways, at most
    // 64 MiB of partial outputs.
    const int64_t per_slot = int64_t{shape.num_q_heads} * (shape.head_dim + 1) * int64_t(sizeof(float));
    split_slots_ = int(std::min<int64_t>(std::max(64, 4 * max_seqs), (int64_t{64} << 20) / per_slot));
    const size_t plan_bytes = size_t(max_tokens) * (sizeof(DecodeItem) + sizeof(PrefillTile));
    ASSIGN_OR_RETURN(plan_buf_, Allocate(plan_bytes));
    RETURN_IF_ERROR(Status(plan_staging_.Reserve(plan_bytes, stream_), "cudaMallocHost"));
    ASSIGN_OR_RETURN(partial_out_, Allocate(size_t(split_slots_) * shape.num_q_heads * shape.head_dim * sizeof(float)));
    ASSIGN_OR_RETURN(partial_lse_, Allocate(size_t(split_slots_) * shape.num_q_heads * sizeof(float)));
    max_plan_tokens_ = max_tokens;
#if defined(GQA_CUDA_SIM)
    target_blocks_ = 2 * 132;  // as on an H100, so that the interpreter's tests split contexts too
#else
    cudaDeviceProp prop{};
    RETURN_IF_ERROR(Status(cudaGetDeviceProperties(&prop, device_), "cudaGetDeviceProperties"));
    target_blocks_ = 2 * prop.multiProcessorCount;
#endif
    return absl::OkStatus();
  }

  std::unique_ptr<AttentionPlan> PlanAttention(const int32_t* token_seq, const int32_t* token_pos, int num_tokens,
                                               const AttentionShape& shape, const KvCacheLayout& layout) override {
    auto plan = std::make_unique<CudaAttentionPlan>(this, num_tokens);
    if (max_plan_tokens_ == 0 || num_tokens > max_plan_tokens_ || !SpecialisedAttention(shape, layout)) return plan;
    const AttentionSchedule sched =
        MakeAttentionSchedule(token_seq, token_pos, num_tokens, shape, layout.dtype, target_blocks_, split_slots_);
    // Decode items then prefill tiles, in one upload.
    const size_t decode_bytes = sched.decode.size() * sizeof(DecodeItem);
    const size_t prefill_bytes = sched.prefill.size() * sizeof(PrefillTile);
    std::vector<char> host(decode_bytes + prefill_bytes);
    if (decode_bytes > 0) std::memcpy(host.data(), sched.decode.data(), decode_bytes);
    if (prefill_bytes > 0) std::memcpy(host.data() + decode_bytes, sched.prefill.data(), prefill_bytes);
    if (!Record(plan_staging_.Upload(plan_buf_.data(), host.data(), host.size(), stream_), "plan upload")) return plan;
    AttentionRun& run = plan->run;
    run.decode = plan_buf_.as<DecodeItem>();
    run.num_decode = int(sched.decode.size());
    run.max_splits = sched.max_splits;
    run.prefill = reinterpret_cast<const PrefillTile*>(plan_buf_.as<char>() + decode_bytes);
    run.num_prefill = int(sched.prefill.size());
    run.partial_out = partial_out_.as<float>();
    run.partial_lse = partial_lse_.as<float>();
    plan->specialised = true;
    return plan;
  }

  void UploadStep(const int32_t* host, size_t count, int32_t* device) override {
    Record(step_staging_.Upload(device, host, count * sizeof(int32_t), stream_), "step upload");
  }

  GraphCapture* graphs() override { return this; }

  std::unique_ptr<AttentionPlan> PlanPaddedDecode(int bucket, const AttentionShape& shape,
                                                  const KvCacheLayout& layout) override {
    auto plan = std::make_unique<CudaAttentionPlan>(this, bucket);
    if (max_plan_tokens_ == 0 || bucket > max_plan_tokens_ || !SpecialisedAttention(shape, layout)) return plan;
    AttentionRun& run = plan->run;
    run.num_decode = bucket;  // decode == null: item i is token i, splits derived on the device
    run.max_splits = DecodeSplitCap(bucket, shape.num_kv_heads, target_blocks_, split_slots_);
    run.partial_out = partial_out_.as<float>();
    run.partial_lse = partial_lse_.as<float>();
    plan->specialised = true;
    return plan;
  }

  // Thread-local capture: every rank captures its own stream on its own
  // thread (NCCL's advice for one thread per GPU).
  absl::Status BeginCapture() override {
    if (!error_.ok()) return error_;
    RETURN_IF_ERROR(Status(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture"));
    capturing_ = true;
    return absl::OkStatus();
  }

  absl::StatusOr<int> EndCapture() override {
    if (!capturing_) return absl::FailedPreconditionError("EndCapture without BeginCapture");
    capturing_ = false;
    cudaGraph_t graph = nullptr;
    const cudaError_t e = cudaStreamEndCapture(stream_, &graph);
    // An op that failed while capturing fails the capture, not the step.
    absl::Status st = std::move(error_);
    error_ = absl::OkStatus();
    if (st.ok()) st = Status(e, "cudaStreamEndCapture");
    cudaGraphExec_t exec = nullptr;
    if (st.ok()) st = Status(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");
    if (graph != nullptr) cudaGraphDestroy(graph);
    if (!st.ok()) {
      cudaGetLastError();
      return st;
    }
    graphs_.push_back(exec);
    return int(graphs_.size()) - 1;
  }

  void ReplayGraph(int graph) override {
    if (graph < 0 || size_t(graph) >= graphs_.size()) {
      return RecordStatus(absl::InternalError(absl::StrCat(kKind, ": no graph ", graph)));
    }
    Record(cudaGraphLaunch(graphs_[graph], stream_), "cudaGraphLaunch");
  }

  void DropGraphs() override {
    if (graphs_.empty()) return;
    Record(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    for (cudaGraphExec_t g : graphs_) cudaGraphExecDestroy(g);
    graphs_.clear();
    retired_scratch_.clear();
  }

#if defined(GQA_CUDA_SIM)
  absl::Status InStreamOrder(const std::function<absl::Status()>& fn) override {
    if (!gqa_sim::Capturing(stream_)) return fn();  // keeps fn's own status (an abort stays an abort)
    std::function<absl::Status()> f = fn;
    const cudaError_t e = gqa_sim::StreamHostCall(stream_, [f]() {
      const absl::Status st = f();
      return st.ok() ? std::string() : st.ToString();
    });
    return Status(e, "recording host work");
  }
#else
  // NCCL's collectives are stream work already: a capture records them.
  absl::Status InStreamOrder(const std::function<absl::Status()>& fn) override { return fn(); }
#endif

  void Embedding(const MatrixView& table, int64_t first_row, const int32_t* ids, int n, float* out) override {
    Record(LaunchEmbedding(table, first_row, ids, n, out, stream_), "embedding");
  }
  void RmsNorm(const float* x, const float* weight, int n, int dim, float eps, float* out) override {
    Record(LaunchRmsNorm(x, weight, n, dim, eps, out, stream_), "rms_norm");
  }
  void MatMul(const float* x, int n, const MatrixView& w, const float* bias, float* y) override {
    const void* a = x;
    if (w.dtype != DType::kF32) {
      const size_t bytes = size_t(n) * size_t(w.cols) * sizeof(uint16_t);
      if (bytes > scratch_.bytes()) {
        absl::StatusOr<DeviceBuffer> b = Allocate(bytes);
        if (!b.ok()) return RecordStatus(b.status());
        Record(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
        // Captured graphs still name the old buffer: it lives as long as they do.
        if (!graphs_.empty()) retired_scratch_.push_back(std::move(scratch_));
        scratch_ = std::move(*b);
      }
      if (!Record(LaunchRoundTo(x, int64_t{n} * w.cols, w.dtype, scratch_.as<uint16_t>(), stream_), "round")) return;
      a = scratch_.data();
    }
    if (absl::Status st = gemm_->Run(a, n, w, y); !st.ok()) return RecordStatus(st);
    if (bias != nullptr) Record(LaunchAddBias(y, bias, n, w.rows, stream_), "bias");
  }
  void Rope(float* x, int n, int num_heads, int head_dim, int64_t token_stride, const int32_t* positions,
            const float* inv_freq) override {
    Record(LaunchRope(x, n, num_heads, head_dim, token_stride, positions, inv_freq, stream_), "rope");
  }
  void SiluMul(const float* gate, const float* up, int64_t count, float* out) override {
    Record(LaunchSiluMul(gate, up, count, out, stream_), "silu_mul");
  }
  void Add(float* x, const float* y, int64_t count) override { Record(LaunchAdd(x, y, count, stream_), "add"); }
  void GatherRows(const float* x, const int32_t* rows, int n, int dim, float* out) override {
    Record(LaunchGatherRows(x, rows, n, dim, out, stream_), "gather_rows");
  }
  void WriteKv(const float* k, const float* v, const AttentionMeta& meta, const KvCacheLayout& layout, void* k_cache,
               void* v_cache) override {
    Record(LaunchWriteKv(k, v, meta, layout, k_cache, v_cache, stream_), "write_kv");
  }
  void Attention(const float* q, const AttentionMeta& meta, const KvCacheLayout& layout, const void* k_cache,
                 const void* v_cache, const AttentionShape& shape, const AttentionPlan& step_plan,
                 float* out) override {
    if (shape.head_dim > kMaxAttentionHeadDim) {
      return RecordStatus(absl::UnimplementedError(absl::StrCat(
          kKind, " attention supports head_dim up to ", kMaxAttentionHeadDim, ", not ", shape.head_dim)));
    }
    GQA_CHECK(step_plan.owner() == this && step_plan.num_tokens() == meta.num_tokens,
              "Attention needs this backend's plan of this step");
    const auto& plan = static_cast<const CudaAttentionPlan&>(step_plan);
    if (plan.specialised && SpecialisedAttention(shape, layout)) {
      Record(LaunchPlannedAttention(q, meta, layout, k_cache, v_cache, shape, plan.run, out, stream_), "attention");
      return;
    }
    Record(LaunchAttention(q, meta, layout, k_cache, v_cache, shape, out, stream_), "attention");
  }
  void ConcatColumns(const float* src, int parts, int64_t part_stride, const int64_t* col_begin, int rows,
                     float* dst) override {
    if (parts > kMaxConcatParts) return Backend::ConcatColumns(src, parts, part_stride, col_begin, rows, dst);
    Record(LaunchConcatColumns(src, parts, part_stride, col_begin, rows, dst, stream_), "concat_columns");
  }
  void Sample(const float* logits, int rows, int vocab, const SamplingRow* params, const PenaltyEntry* penalties,
              float* scratch, SampleOutput* out) override {
    Record(LaunchSample(logits, rows, vocab, params, penalties, scratch, out, stream_), "sample");
  }

 private:
  absl::Status Status(cudaError_t e, const char* what) const {
    if (e == cudaSuccess) return absl::OkStatus();
    return absl::InternalError(
        absl::StrCat(kKind, " device ", device_, ": ", what, ": ", cudaGetErrorString(e), LaunchDetail()));
  }
  // Keeps the first error; true when e is cudaSuccess.
  bool Record(cudaError_t e, const char* what) {
    if (e == cudaSuccess) return true;
    cudaGetLastError();  // clear it so that later checks see their own errors
    RecordStatus(Status(e, what));
    return false;
  }
  void RecordStatus(absl::Status st) {
    if (error_.ok()) error_ = std::move(st);
  }

  int device_;
  cudaStream_t stream_;
  std::unique_ptr<Gemm> gemm_;
  DeviceBuffer scratch_;  // activations rounded to 16 bits for the GEMM
  std::vector<DeviceBuffer> retired_scratch_;  // outgrown scratch that graphs still use
  PinnedStaging step_staging_, plan_staging_;
  // The specialised attention's plan buffers (ReserveAttention, PlanAttention).
  DeviceBuffer plan_buf_, partial_out_, partial_lse_;
  int max_plan_tokens_ = 0;
  int split_slots_ = 0;
  int target_blocks_ = 0;
  std::vector<cudaGraphExec_t> graphs_;  // ReplayGraph's ids index this
  bool capturing_ = false;
  absl::Status error_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(int device) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    cudaGetLastError();
    return absl::FailedPreconditionError(absl::StrCat("--device ", kKind, ": no CUDA device is visible (",
                                                      e != cudaSuccess ? cudaGetErrorString(e) : "0 devices", ")"));
  }
  if (device < 0 || device >= count) {
    return absl::FailedPreconditionError(
        absl::StrCat("--device ", kKind, ": device ", device, " requested but ", count, " visible"));
  }
  if (cudaSetDevice(device) != cudaSuccess) {
    cudaGetLastError();
    return absl::InternalError(absl::StrCat(kKind, ": cudaSetDevice(", device, ") failed"));
  }
  cudaStream_t stream = nullptr;
  if (cudaStreamCreate(&stream) != cudaSuccess) {
    cudaGetLastError();
    return absl::InternalError(absl::StrCat(kKind, " device ", device, ": cudaStreamCreate failed"));
  }
  absl::StatusOr<std::unique_ptr<Gemm>> gemm = Gemm::Create(stream);
  if (!gemm.ok()) {
    cudaStreamDestroy(stream);
    return gemm.status();
  }
  return std::unique_ptr<Backend>(new CudaBackend(device, stream, std::move(*gemm)));
}

#if !defined(GQA_CUDA_SIM)
absl::StatusOr<int> DeviceCount() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return absl::FailedPreconditionError(absl::StrCat("--device cuda: no CUDA device is visible (", cudaGetErrorString(e), ")"));
  }
  return count;
}
#endif

}  // namespace gqa::GQA_CUDA_NS
