// Memory-bandwidth probes for roofline figures, run with the same thread
// count as the work they are compared with.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/thread_pool.h"

namespace gqa {

class BandwidthProbe {
 public:
  // bytes: size of each buffer; pick well above the last-level cache.
  BandwidthProbe(ThreadPool* pool, size_t bytes);
  // STREAM-style copy: (bytes read + bytes written) / seconds.
  double CopyBytesPerSecond();
  // Read-only sweep (a vectorised sum): bytes read / seconds.
  double ReadBytesPerSecond();

 private:
  ThreadPool* pool_;
  std::vector<float> src_, dst_;
};

double MonotonicSeconds();

// The middle value (the mean of the two middle ones for an even count).
double Median(std::vector<double> v);

// Copy bandwidth of a device (bytes read + written per second) between two
// of its buffers of src's size: the median of `iters` timed copies, each
// synchronised, after one warm-up copy.
absl::StatusOr<double> DeviceCopyBytesPerSecond(Backend& b, const DeviceBuffer& src, const DeviceBuffer& dst, int iters);

}  // namespace gqa
