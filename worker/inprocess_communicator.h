// Collectives between ranks that are threads of one process sharing host
// memory (the CPU backend's simulated devices). Waiting blocks on a condition
// variable: no spinning, so eight ranks can share two cores.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <vector>

#include "worker/communicator.h"

namespace gqa {

class InProcessGroup {
 public:
  explicit InProcessGroup(int size);
  ~InProcessGroup();
  int size() const { return size_; }
  // The communicator of one rank; valid while the group lives.
  Communicator* rank(int r) { return comms_[r].get(); }

  // Makes every pending and future collective return `why` (so that ranks
  // waiting for a failed rank return instead of hanging) until Reset().
  void Abort(const absl::Status& why);
  // Clears an abort; call only when no rank is inside a collective.
  void Reset();

 private:
  class Comm;
  // Blocks until all ranks have arrived (or the group is aborted).
  absl::Status Arrive();

  const int size_;
  std::vector<std::unique_ptr<Communicator>> comms_;
  std::vector<void*> posted_;  // per-rank buffer of the current collective
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  absl::Status abort_;
};

}  // namespace gqa
