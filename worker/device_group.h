// The devices of one tensor-parallel group and the collectives between them:
// rank r's Backend and Communicator, made for a device kind. The executor is
// written against this and nothing device-specific.
//   cpu       CpuBackend per rank (simulated devices), in-process collectives
//   cuda-sim  the CUDA backend's kernels on the SIMT interpreter, in-process
//             collectives (NCCL's place under the interpreter)
//   cuda      one GPU per rank, NCCL on each backend's stream
#pragma once

#include <memory>
#include <string>

#include "kernels/backend.h"
#include "worker/communicator.h"

namespace gqa {

enum class DeviceKind { kCpu, kCuda, kCudaSim };
absl::StatusOr<DeviceKind> ParseDeviceKind(absl::string_view name);  // "cpu", "cuda", "cuda-sim"
const char* DeviceKindName(DeviceKind kind);

// CPU backend, bf16 weights on AVX-512 BF16: activations rounded to one
// bf16 in the matrix products (kBf16, as llama.cpp does) or kept f32 with
// the weights widened (kF32). kAuto leaves the backend's default: kBf16, or
// GQA_CPU_BF16_ACTIVATIONS=0 / 1.
enum class CpuActivations { kAuto, kBf16, kF32 };

// How a group makes its backends; what a kind does not use it ignores.
struct DeviceOptions {
  int threads_per_rank = 1;  // CPU: threads of each rank's pool
  CpuActivations cpu_activations = CpuActivations::kAuto;
};

// A CPU backend made as `options` say (the CPU device groups' backends).
std::unique_ptr<Backend> CreateCpuBackend(const DeviceOptions& options);

class DeviceGroup {
 public:
  static absl::StatusOr<std::unique_ptr<DeviceGroup>> Create(DeviceKind kind, int size, const DeviceOptions& options);
  virtual ~DeviceGroup() = default;

  int size() const { return size_; }
  DeviceKind kind() const { return kind_; }

  // Sets up rank r: its backend, then its communicator. Called once per rank,
  // every rank on its own thread and all of them at the same time (NCCL's
  // initialisation waits for the whole group).
  virtual absl::Status InitRank(int rank) = 0;
  virtual Backend* backend(int rank) = 0;
  // Stays valid across Reset().
  virtual Communicator* comm(int rank) = 0;

  // Makes every pending and future collective of the group fail with `why`
  // (a failed rank releases the others instead of leaving them waiting).
  virtual void Abort(const absl::Status& why) = 0;
  // Makes the group usable again after Abort, when no rank is inside a
  // collective. NCCL communicators cannot be reused once aborted: they are
  // created anew.
  virtual absl::Status Reset() = 0;

 protected:
  DeviceGroup(DeviceKind kind, int size) : kind_(kind), size_(size) {}

 private:
  DeviceKind kind_;
  int size_;
};

class MpiJob;
// The rank of an MPI job that runs in this process (see worker/mpi_job.h):
// backend(r) and comm(r) exist only for r = job->rank(). Built with MPI only.
absl::StatusOr<std::unique_ptr<DeviceGroup>> CreateMpiDeviceGroup(DeviceKind kind, MpiJob* job,
                                                                   const DeviceOptions& options);

#if defined(GQA_WITH_CUDA)
// One GPU per rank (rank r on device r % visible devices) with NCCL.
absl::StatusOr<std::unique_ptr<DeviceGroup>> CreateNcclDeviceGroup(int size);
#endif

}  // namespace gqa
