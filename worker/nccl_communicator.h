// Collectives between GPUs through NCCL, issued on the rank's CUDA stream.
// Built when the CUDA toolkit and NCCL are found (GQA_ENABLE_CUDA).
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <memory>

#include "worker/communicator.h"

namespace gqa {

class NcclCommunicator final : public Communicator {
 public:
  // Joins rank `rank` of a `size`-rank group identified by `id` (made once
  // with NewId() and shared with every rank) on CUDA device `device`.
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(int rank, int size, const ncclUniqueId& id,
                                                                   int device, cudaStream_t stream);
  static absl::StatusOr<ncclUniqueId> NewId();
  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  absl::Status AllReduceSum(float* data, int64_t count) override;
  absl::Status AllGather(const float* send, int64_t count, float* recv) override;
  absl::Status Broadcast(void* data, int64_t bytes, int root) override;
  // All ranks have reached this point and this rank's stream is drained.
  absl::Status Barrier() override;
  // Aborts outstanding operations (a failed rank releases the others). The
  // communicator cannot be used afterwards; make a new one.
  void Abort();

 private:
  NcclCommunicator(int rank, int size, ncclComm_t comm, cudaStream_t stream, float* scratch)
      : rank_(rank), size_(size), comm_(comm), stream_(stream), scratch_(scratch) {}
  int rank_, size_;
  ncclComm_t comm_;
  cudaStream_t stream_;
  float* scratch_;  // one device float for Barrier
  bool aborted_ = false;
};

}  // namespace gqa
