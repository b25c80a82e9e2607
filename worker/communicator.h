// Collectives over the ranks of one tensor-parallel group. Buffers are device
// pointers of the calling rank's backend; every rank calls the same
// collectives in the same order. No global state: a Communicator is an
// object handed to each worker.
#pragma once

#include <cstdint>

#include "base/common.h"

namespace gqa {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // data[i] = sum over ranks of data[i], identical on every rank.
  virtual absl::Status AllReduceSum(float* data, int64_t count) = 0;
  // recv[r * count + i] = send[i] of rank r.
  virtual absl::Status AllGather(const float* send, int64_t count, float* recv) = 0;
  // Copies root's bytes into data on every other rank.
  virtual absl::Status Broadcast(void* data, int64_t bytes, int root) = 0;
  virtual absl::Status Barrier() = 0;
  // Changes whenever the underlying collectives are created anew (NCCL
  // after a reset): work captured in a graph with an older generation names
  // communicators that are gone and must not be replayed.
  virtual uint64_t generation() const { return 0; }
};

// The group of one: every collective is the identity.
class SingleRankCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  absl::Status AllReduceSum(float*, int64_t) override { return absl::OkStatus(); }
  absl::Status AllGather(const float* send, int64_t count, float* recv) override;
  absl::Status Broadcast(void*, int64_t, int) override { return absl::OkStatus(); }
  absl::Status Barrier() override { return absl::OkStatus(); }
};

}  // namespace gqa
