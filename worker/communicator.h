// Collectives over the ranks of one tensor-parallel group. Buffers are device
// pointers of the calling rank's backend; every rank calls each collective in
// the same order.
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace gqa {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // data[i] = sum over ranks of data[i], on every rank.
  virtual absl::Status AllReduceSum(float* data, int64_t count) = 0;
};

// The group of one: every collective is the identity.
class SingleRankCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  absl::Status AllReduceSum(float*, int64_t) override { return absl::OkStatus(); }
};

}  // namespace gqa
