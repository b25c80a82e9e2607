// The one rank of a tensor-parallel group that lives in this process, when
// the group is an MPI job: the rank's backend, and its collectives over MPI
// (CPU, cuda-sim) or over NCCL with the unique id sent by MPI (cuda). An MPI
// group cannot be restored after a failure: the job is restarted instead.
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_backend.h"
#include "worker/device_group.h"
#include "worker/mpi_job.h"
#if defined(GQA_WITH_CUDA)
#include "worker/nccl_communicator.h"
#endif

namespace gqa {
namespace {

class MpiDeviceGroup final : public DeviceGroup {
 public:
  MpiDeviceGroup(DeviceKind kind, MpiJob* job, const DeviceOptions& options)
      : DeviceGroup(kind, job->size()), job_(job), options_(options) {}

  absl::Status InitRank(int rank) override {
    if (rank != job_->rank()) {
      return absl::InternalError(absl::StrCat("rank ", rank, " is not this process's (", job_->rank(), ")"));
    }
    switch (kind()) {
      case DeviceKind::kCpu:
        backend_ = CreateCpuBackend(options_);
        comm_ = job_->comm();
        return absl::OkStatus();
      case DeviceKind::kCudaSim: {
        ASSIGN_OR_RETURN(backend_, cuda_sim::CreateBackend(rank));
        comm_ = job_->comm();
        return absl::OkStatus();
      }
      case DeviceKind::kCuda:
        return InitNccl(rank);
    }
    return absl::InvalidArgumentError("unknown device kind");
  }
  Backend* backend(int rank) override { return rank == job_->rank() ? backend_.get() : nullptr; }
  Communicator* comm(int rank) override { return rank == job_->rank() ? comm_ : nullptr; }
  void Abort(const absl::Status& why) override { job_->Fail(why); }
  absl::Status Reset() override {
    const absl::Status why = job_->failure();
    if (why.ok()) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat("a tensor-parallel MPI job cannot recover from a failed rank (", why.message(),
                     "): restart the job"));
  }

 private:
  absl::Status InitNccl(int rank) {
#if defined(GQA_WITH_CUDA)
    // Rank r uses local GPU r % (GPUs of its node), as mpirun places ranks.
    ASSIGN_OR_RETURN(int visible, cuda::DeviceCount());
    // Every rank takes part in the id broadcast, whatever its device did.
    absl::StatusOr<std::unique_ptr<Backend>> b =
        visible > 0 ? cuda::CreateBackend(job_->local_rank() % visible)
                    : absl::FailedPreconditionError("--device cuda: no CUDA device is visible");
    std::vector<char> id_bytes(sizeof(ncclUniqueId));
    if (rank == 0) {
      ASSIGN_OR_RETURN(ncclUniqueId id, NcclCommunicator::NewId());
      std::memcpy(id_bytes.data(), &id, sizeof(id));
    }
    RETURN_IF_ERROR(job_->BroadcastBytes(&id_bytes));
    int64_t ready = b.ok() ? 1 : 0;
    // Every rank must know that all devices started before NCCL's
    // initialisation, which waits for the whole group.
    std::vector<float> flags(size());
    float mine = float(ready);
    RETURN_IF_ERROR(job_->comm()->AllGather(&mine, 1, flags.data()));
    RETURN_IF_ERROR(b.status());
    for (int r = 0; r < size(); ++r) {
      if (flags[r] == 0.0f) return absl::AbortedError(absl::StrCat("rank ", r, "'s device failed to start"));
    }
    backend_ = std::move(*b);
    ncclUniqueId id;
    std::memcpy(&id, id_bytes.data(), sizeof(id));
    ASSIGN_OR_RETURN(nccl_, NcclCommunicator::Create(rank, size(), id, job_->local_rank() % visible,
                                                     static_cast<cudaStream_t>(backend_->NativeStream())));
    comm_ = nccl_.get();
    NcclCommunicator* nccl = nccl_.get();
    job_->OnAbort([nccl] { nccl->Abort(); });
    return absl::OkStatus();
#else
    (void)rank;
    return cuda::CreateBackend(0).status();
#endif
  }

  MpiJob* job_;
  DeviceOptions options_;
  std::unique_ptr<Backend> backend_;
  Communicator* comm_ = nullptr;
#if defined(GQA_WITH_CUDA)
  std::unique_ptr<NcclCommunicator> nccl_;
#endif
};

}  // namespace

absl::StatusOr<std::unique_ptr<DeviceGroup>> CreateMpiDeviceGroup(DeviceKind kind, MpiJob* job,
                                                                   const DeviceOptions& options) {
  return std::unique_ptr<DeviceGroup>(new MpiDeviceGroup(kind, job, options));
}

}  // namespace gqa
