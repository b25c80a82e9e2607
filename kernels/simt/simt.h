// The SIMT interpreter: what a .cu kernel source needs from CUDA when it is
// compiled by the host compiler instead of nvcc. Every CUDA thread of a block
// runs as a fiber on the launching OS thread; __syncthreads and the warp
// collectives (shuffles, votes, __syncwarp) are scheduling points where a
// fiber waits for the others, so barriers and warp-synchronous code behave
// as on a GPU. __shared__ variables are thread_local statics: one copy per
// OS thread, which runs one block at a time, so one copy per block.
//
// Device memory is host memory here, so AddressSanitizer sees out-of-bounds
// global accesses. A divergent __syncthreads (some threads at another
// barrier, or exited while others wait) and warp collectives whose lanes
// never meet are reported as a launch error instead of hanging.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>

namespace gqa_sim {

struct Uint3 {
  unsigned x = 0, y = 0, z = 0;
};

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr Dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// The order in which runnable fibers run between scheduling points. Outputs
// of a race-free kernel do not depend on it.
enum class Schedule : uint8_t {
  kForward,   // thread 0, 1, 2, ...
  kReverse,   // the last thread first
  kShuffled,  // a fresh random permutation at every scheduling point (seeded)
  kWarpsReversed,  // warps last-to-first, lanes in order
};
const char* ScheduleName(Schedule s);

// The schedule of launches made by the calling OS thread from now on.
void SetSchedule(Schedule s, uint64_t seed = 1);
Schedule CurrentSchedule();

// Runs grid x block fibers, block after block; kernel() reads its indices
// through threadIdx/blockIdx. Returns an empty string on success, else what
// went wrong (the launch is abandoned at the first failing block).
std::string RunGrid(Dim3 grid, Dim3 block, const std::function<void()>& kernel);

// The calling fiber's indices (valid inside a kernel only).
const Uint3& ThreadIdx();
const Uint3& BlockIdx();
const Dim3& BlockDim();
const Dim3& GridDim();

// Block-wide barrier; `where` names the call site for divergence reports.
void SyncThreads(const char* file, int line);

// Warp collectives over the lanes in `mask` (all of which must call the
// same collective). `value` is this lane's 64 bits; returns lane src's.
uint64_t WarpExchange(unsigned mask, uint64_t value, int src_lane);
// One bit per lane in mask: that lane's predicate.
unsigned WarpBallot(unsigned mask, bool predicate);
// Every lane in mask contributes `bytes` (at most 64) and receives all 32
// lanes' contributions in `all` (lane l's at l * bytes; lanes outside the
// mask left as they were): what a tensor-core instruction does with its
// operand fragments.
void WarpGather(unsigned mask, const void* mine, size_t bytes, void* all);
void WarpSync(unsigned mask);
int LaneId();

// Global-memory traffic of the kernels' load/store helpers (GlobalLoad,
// GlobalStore, AsyncCopy16 in device_utils.cuh), counted on this OS thread
// since the last ResetTraffic(). A warp-level request is one execution of
// one helper call site by the lanes of a warp (the k-th execution by each
// lane); its sectors are the distinct 32-byte segments its lanes touch, and
// its ideal the fewest segments that many bytes could occupy: Nsight
// Compute's "sectors per request" against a perfectly coalesced access.
struct TrafficTotals {
  uint64_t bytes = 0;
  uint64_t requests = 0;
  uint64_t sectors = 0;
  uint64_t ideal_sectors = 0;
};
struct Traffic {
  TrafficTotals loads, stores;
  TrafficTotals watched_loads;  // loads inside the watched ranges
};
void ResetTraffic();
Traffic GetTraffic();
// Loads that fall in [begin, begin + bytes) are also counted as watched
// (say, the K and V caches), until ClearWatches().
void WatchRange(const void* begin, size_t bytes);
void ClearWatches();
// Called by the helpers: one lane's access of `bytes` at p from call site
// (file, line).
void CountAccess(const void* p, size_t bytes, bool store, const char* file, int line);

// cp.async under the interpreter: the copy is queued on the calling CUDA
// thread and happens only when a wait retires its group, as on the GPU, so a
// kernel that reads a tile before waiting for it reads stale shared memory.
void AsyncCopy(void* dst, const void* src, size_t bytes);
void AsyncCommit();
void AsyncWait(int keep_groups);  // completes all but the newest keep_groups groups

// Counters of the launches run on this OS thread (for tests).
struct Stats {
  uint64_t launches = 0;
  uint64_t blocks = 0;
  uint64_t fiber_switches = 0;
};
Stats GetStats();

template <typename T>
T BitCast64(uint64_t bits) {
  static_assert(sizeof(T) <= 8, "warp shuffles move at most 64 bits");
  T v;
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}
template <typename T>
uint64_t ToBits64(T v) {
  static_assert(sizeof(T) <= 8, "warp shuffles move at most 64 bits");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return bits;
}

}  // namespace gqa_sim
