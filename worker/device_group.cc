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
  StreamOrderedCommunicator(Communicator* inner, Backend* backend) : inner_(inner), backend_(backend) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  absl::Status AllReduceSum(float* data, int64_t count) override {
    return backend_->InStreamOrder([c = inner_, data, count] { return c->AllReduceSum(data, count); });
  }
  absl::Status AllGather(const float* send, int64_t count, float* recv) override {
    return backend_->InStreamOrder([c = inner_, send, count, recv] { return c->AllGather(send, count, recv); });
  }
  absl::Status Broadcast(void* data, int64_t bytes, int root) override {
    return backend_->InStreamOrder([c = inner_, data, bytes, root] { return c->Broadcast(data, bytes, root); });
  }
  absl::Status Barrier() override { return inner_->Barrier(); }

 private:
  Communicator* inner_;
  Backend* backend_;
};

// Ranks that share host memory: CPU backends or the interpreter's, with the
// in-process collectives.
class InProcessDeviceGroup final : public DeviceGroup {
 public:
  InProcessDeviceGroup(DeviceKind kind, int size, int threads_per_rank)
      : DeviceGroup(kind, size), threads_per_rank_(threads_per_rank), group_(size), backends_(size), ordered_(size) {}

  absl::Status InitRank(int rank) override {
    if (kind() == DeviceKind::kCpu) {
      backends_[rank] = std::make_unique<CpuBackend>(threads_per_rank_);
      return absl::OkStatus();
    }
    ASSIGN_OR_RETURN(backends_[rank], cuda_sim::CreateBackend(rank));
    ordered_[rank] = std::make_unique<StreamOrderedCommunicator>(group_.rank(rank), backends_[rank].get());
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
  int threads_per_rank_;
  InProcessGroup group_;
  std::vector<std::unique_ptr<Backend>> backends_;
  std::vector<std::unique_ptr<Communicator>> ordered_;  // cuda-sim: collectives in stream order
};

}  // namespace

absl::StatusOr<std::unique_ptr<DeviceGroup>> DeviceGroup::Create(DeviceKind kind, int size, int threads_per_rank) {
  if (size < 1) return absl::InvalidArgumentError("a device group needs at least one rank");
  switch (kind) {
    case DeviceKind::kCpu:
    case DeviceKind::kCudaSim:
      return std::unique_ptr<DeviceGroup>(new InProcessDeviceGroup(kind, size, threads_per_rank));
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
