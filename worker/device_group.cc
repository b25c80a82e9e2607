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

// Ranks that share host memory: CPU backends or the interpreter's, with the
// in-process collectives.
class InProcessDeviceGroup final : public DeviceGroup {
 public:
  InProcessDeviceGroup(DeviceKind kind, int size, int threads_per_rank)
      : DeviceGroup(kind, size), threads_per_rank_(threads_per_rank), group_(size), backends_(size) {}

  absl::Status InitRank(int rank) override {
    if (kind() == DeviceKind::kCpu) {
      backends_[rank] = std::make_unique<CpuBackend>(threads_per_rank_);
      return absl::OkStatus();
    }
    ASSIGN_OR_RETURN(backends_[rank], cuda_sim::CreateBackend(rank));
    return absl::OkStatus();
  }
  Backend* backend(int rank) override { return backends_[rank].get(); }
  Communicator* comm(int rank) override { return group_.rank(rank); }
  void Abort(const absl::Status& why) override { group_.Abort(why); }
  absl::Status Reset() override {
    group_.Reset();
    return absl::OkStatus();
  }

 private:
  int threads_per_rank_;
  InProcessGroup group_;
  std::vector<std::unique_ptr<Backend>> backends_;
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
