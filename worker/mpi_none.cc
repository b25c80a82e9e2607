// Builds without MPI: a process started by mpirun with more than one rank
// says so instead of running every rank as a whole server.
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "worker/mpi_job.h"

namespace gqa {

struct MpiJob::Comms {};

absl::StatusOr<std::unique_ptr<MpiJob>> MpiJob::InitIfLaunched(int*, char***) {
  const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
  if (size == nullptr) size = std::getenv("PMI_SIZE");
  if (size != nullptr && std::atoi(size) > 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "started by mpirun with ", size, " ranks, but this build has no MPI support (install libopenmpi-dev "
        "and rebuild); without mpirun, --tp runs the ranks as threads of one process"));
  }
  return nullptr;
}

// No MpiJob is ever made in this build; its members exist for the linker.
MpiJob::~MpiJob() = default;
Communicator* MpiJob::comm() { return nullptr; }
absl::Status MpiJob::BroadcastBytes(std::vector<char>*) { return absl::UnimplementedError("no MPI in this build"); }
absl::Status MpiJob::BroadcastInt64(int64_t*) { return absl::UnimplementedError("no MPI in this build"); }
void MpiJob::StartWatch(double, double, std::function<void(const absl::Status&)>) {}
void MpiJob::OnAbort(std::function<void()>) {}
void MpiJob::Fail(const absl::Status&) {}
absl::Status MpiJob::failure() const { return absl::OkStatus(); }
std::vector<int> MpiJob::SilentRanks(double) const { return {}; }
void MpiJob::AbortJob(int code) { std::_Exit(code); }
absl::Status MpiJob::Wait(void*, const char*) { return absl::UnimplementedError("no MPI in this build"); }

}  // namespace gqa
