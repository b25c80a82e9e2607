#include "worker/communicator.h"

#include <cstring>

namespace gqa {

absl::Status SingleRankCommunicator::AllGather(const float* send, int64_t count, float* recv) {
  if (send != recv) std::memmove(recv, send, size_t(count) * sizeof(float));
  return absl::OkStatus();
}

}  // namespace gqa
