#include "worker/device_group.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "worker/inprocess_communicator.h"

namespace gqa {

absl::StatusOr<DeviceKind> ParseDeviceKind(absl::string_view name) {
  if (name == "cpu") return DeviceKind::kCpu;
  if (name == "cuda") return DeviceKind::kCuda;
  if (name == "cuda-sim") return DeviceKind::kCudaSim;
  return absl::InvalidArgumentError(absl::StrCat("--device ", name, ": expected cpu, cuda or cuda-sim"));
}

const char* DeviceKindName(DeviceKind kind) {
  switch (kind) {
    case DeviceKind::kCpu: return "cpu";
    case DeviceKind::kCuda: return "cuda";
    case DeviceKind::kCudaSim: return "cuda-sim";
  }
  return "?";
}

namespace {

// The interpreter's stand-in for NCCL: the in-process collectives, issued in
// the rank's stream order, so that a captured decode step records them and
// every replay runs them again, as NCCL kernels in a CUDA graph do.
class StreamOrderedCommunicator final : public Communicator {
 public:
  StreamOrderedCommunicator(Communicator* inner, GraphCapture* graphs) : inner_(inner), graphs_(graphs) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  absl::Status AllReduceSum(float* data, int64_t count) override {
    return graphs_->InStreamOrder([c = inner_, data, count] { return c->AllReduceSum(data, count); });
  }
  absl::Status AllGather(const float* send, int64_t count, float* recv) override {
    return graphs_->InStreamOrder([c = inner_, send, count, recv] { return c->AllGather(send, count, recv); });
  }
  absl::Status Broadcast(void* data, int64_t bytes, int root) override {
    return graphs_->InStreamOrder([c = inner_, data, bytes, root] { return c->Broadcast(data, bytes, root); });
  }
  absl::Status Barrier() override { return inner_->Barrier(); }

 private:
  Communicator* inner_;
  GraphCapture* graphs_;
};

// Ranks that share host memory: CPU backends or the interpreter's, with the
// in-process collectives.
class InProcessDeviceGroup final : public DeviceGroup {
 public:
  InProcessDeviceGroup(DeviceKind kind, int size, const DeviceOptions& options)
      : DeviceGroup(kind, size), options_(options), group_(size), backends_(size), ordered_(size) {}

  absl::Status InitRank(int rank) override {
    if (kind() == DeviceKind::kCpu) {
      backends_[rank] = CreateCpuBackend(options_);
      return absl::OkStatus();
    }
    ASSIGN_OR_RETURN(backends_[rank], cuda_sim::CreateBackend(rank));
    GraphCapture* graphs = backends_[rank]->graphs();
    if (graphs == nullptr) return absl::InternalError("the interpreter's backend has no graphs");
    ordered_[rank] = std::make_unique<StreamOrderedCommunicator>(group_.rank(rank), graphs);
    return absl::OkStatus();
  }
  Backend* backend(int rank) override { return backends_[rank].get(); }
  Communicator* comm(int rank) override {
    return ordered_[rank] != nullptr ? ordered_[rank].get() : group_.rank(rank);
  }
  void Abort(const absl::Status& why) override { group_.Abort(why); }
  absl::Status Reset() override {
    group_.Reset();
    return absl::OkStatus();
  }

 private:
  DeviceOptions options_;
  InProcessGroup group_;
  std::vector<std::unique_ptr<Backend>> backends_;
  std::vector<std::unique_ptr<Communicator>> ordered_;  // cuda-sim: collectives in stream order
};

}  // namespace

std::unique_ptr<Backend> CreateCpuBackend(const DeviceOptions& options) {
  auto cpu = std::make_unique<CpuBackend>(options.threads_per_rank);
  if (options.cpu_activations != CpuActivations::kAuto) {
    cpu->set_bf16_activations(options.cpu_activations == CpuActivations::kBf16);
  }
  return cpu;
}

absl::StatusOr<std::unique_ptr<DeviceGroup>> DeviceGroup::Create(DeviceKind kind, int size,
                                                                 const DeviceOptions& options) {
  if (size < 1) return absl::InvalidArgumentError("a device group needs at least one rank");
  switch (kind) {
    case DeviceKind::kCpu:
    case DeviceKind::kCudaSim:
      return std::unique_ptr<DeviceGroup>(new InProcessDeviceGroup(kind, size, options));
    case DeviceKind::kCuda:
#if defined(GQA_WITH_CUDA)
      return CreateNcclDeviceGroup(size);
#else
      // Let the backend say why there is none.
      return cuda::CreateBackend(0).status();
#endif
  }
  return absl::InvalidArgumentError("unknown device kind");
}

}  // namespace gqa
