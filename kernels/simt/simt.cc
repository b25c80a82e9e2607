// The fiber scheduler behind the SIMT interpreter (see simt.h). A block runs
// in passes: every runnable fiber runs until it reaches a scheduling point
// (a barrier or a warp collective) or returns; then complete warp
// collectives are released, else a barrier that every live thread has
// reached; anything else can never make progress and is reported.
#include "kernels/simt/simt.h"

#include <sys/mman.h>
#include <unistd.h>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include <algorithm>
#include <cstring>
#include <map>
#include <numeric>
#include <set>
#include <tuple>
#include <unordered_map>
#include <random>
#include <sstream>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define GQA_SIM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GQA_SIM_ASAN 1
#endif
#endif

#ifdef GQA_SIM_ASAN
extern "C" {
void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom, size_t size);
void __sanitizer_finish_switch_fiber(void* fake_stack_save, const void** bottom_old, size_t* size_old);
void __asan_unpoison_memory_region(void const volatile* addr, size_t size);
}
#endif

namespace gqa_sim {
namespace {

#ifdef GQA_SIM_ASAN
constexpr size_t kStackBytes = 64 << 10;
#else
constexpr size_t kStackBytes = 128 << 10;
#endif

// A suspended execution context. On x86-64 a switch saves the callee-saved
// registers and the floating-point control words on the old stack and
// swaps stack pointers, with no system call (ucontext's swapcontext makes
// one per switch to save the signal mask, which dominated the run time).
#if defined(__x86_64__)
struct Context {
  void* sp = nullptr;
};
extern "C" void gqa_sim_switch(void** save_sp, void* load_sp);
asm(R"(
  .text
  .globl gqa_sim_switch
  .type gqa_sim_switch, @function
gqa_sim_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size gqa_sim_switch, .-gqa_sim_switch
  .section .note.GNU-stack,"",@progbits
  .text
)");
void Switch(Context& from, Context& to) { gqa_sim_switch(&from.sp, to.sp); }
// A context that starts entry() on the stack [stack, stack + bytes).
void MakeContext(Context& c, void* stack, size_t bytes, void (*entry)()) {
  auto* top = reinterpret_cast<uint64_t*>((reinterpret_cast<uintptr_t>(stack) + bytes) & ~uintptr_t{15});
  *--top = 0;  // a null return address above entry's frame, 16-byte aligned below it
  *--top = reinterpret_cast<uint64_t>(entry);  // where the first switch returns to
  for (int i = 0; i < 6; ++i) *--top = 0;      // rbp rbx r12 r13 r14 r15
  uint32_t mxcsr = 0;
  uint16_t fpucw = 0;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpucw));
  *--top = uint64_t{mxcsr} | uint64_t{fpucw} << 32;
  c.sp = top;
}
#else
struct Context {
  ucontext_t uc;
};
void Switch(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
void MakeContext(Context& c, void* stack, size_t bytes, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}
#endif

enum class State : uint8_t { kRunnable, kBarrier, kWarp, kDone };
enum class WarpOp : uint8_t { kExchange, kBallot, kSync };

struct Fiber {
  Context ctx;
  void* stack = nullptr;
  Uint3 tid;
  int linear = 0;
  State state = State::kRunnable;
  const char* bar_file = nullptr;
  int bar_line = 0;
  WarpOp op = WarpOp::kSync;
  unsigned mask = 0;
  uint64_t value = 0;
  int src = 0;
  uint64_t result = 0;
  unsigned char blob[64];  // this lane's contribution to a WarpGather
  void* fake_stack = nullptr;  // AddressSanitizer's record of this fiber's stack
  std::unordered_map<const void*, uint32_t> site_count;  // executions per access site (traffic)
  struct PendingCopy {
    void* dst;
    const void* src;
    size_t bytes;
    int group;
  };
  std::vector<PendingCopy> pending;  // cp.async copies not yet retired
  int open_group = 0;                // the group that AsyncCommit closes next
};

// One warp-level memory request being assembled from its lanes' accesses.
struct Request {
  bool store = false;
  bool watched = false;
  uint64_t bytes = 0;             // distinct addresses only: lanes reading one word share it
  std::set<uint64_t> addresses;
  std::set<uint64_t> sectors;
};

struct Block {
  Dim3 grid, dim;
  Uint3 idx;
  int num_threads = 0;
  std::vector<Fiber> fibers;
  Context sched;
  const std::function<void()>* kernel = nullptr;
  Fiber* current = nullptr;
  std::string error;
  const void* sched_stack_bottom = nullptr;
  size_t sched_stack_size = 0;
  void* sched_fake_stack = nullptr;
  // Requests keyed by (warp, site, execution), folded into the totals when
  // the block ends.
  std::map<std::tuple<int, const void*, uint32_t>, Request> requests;
};

// Fiber stacks, reused by every block this OS thread runs.
class StackPool {
 public:
  ~StackPool() {
    for (void* s : stacks_) munmap(static_cast<char*>(s) - page(), kStackBytes + page());
  }
  void* Get(size_t i) {
    while (stacks_.size() <= i) {
      void* p = mmap(nullptr, kStackBytes + page(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) return nullptr;
      mprotect(p, page(), PROT_NONE);  // guard page below the stack
      stacks_.push_back(static_cast<char*>(p) + page());
    }
    return stacks_[i];
  }

 private:
  static size_t page() { return size_t(sysconf(_SC_PAGESIZE)); }
  std::vector<void*> stacks_;
};

thread_local Block* t_block = nullptr;
thread_local Schedule t_schedule = Schedule::kForward;
thread_local std::mt19937_64 t_rng(1);
thread_local Stats t_stats;
thread_local StackPool t_stacks;
thread_local Traffic t_traffic;
thread_local std::vector<std::pair<uintptr_t, uintptr_t>> t_watches;

void Fold(TrafficTotals& t, const Request& r) {
  t.bytes += r.bytes;
  t.requests += 1;
  t.sectors += r.sectors.size();
  t.ideal_sectors += (r.bytes + 31) / 32;
}

void FoldRequests(Block& b) {
  for (const auto& [key, r] : b.requests) {
    Fold(r.store ? t_traffic.stores : t_traffic.loads, r);
    if (r.watched && !r.store) Fold(t_traffic.watched_loads, r);
  }
  b.requests.clear();
}

Fiber& Me() { return *t_block->current; }

// Fiber side of a switch back to the scheduler.
void YieldToScheduler(bool finished) {
  Block& b = *t_block;
  Fiber& f = *b.current;
#ifdef GQA_SIM_ASAN
  __sanitizer_start_switch_fiber(finished ? nullptr : &f.fake_stack, b.sched_stack_bottom, b.sched_stack_size);
#endif
  Switch(f.ctx, b.sched);
#ifdef GQA_SIM_ASAN
  __sanitizer_finish_switch_fiber(f.fake_stack, &b.sched_stack_bottom, &b.sched_stack_size);
#endif
  (void)finished;
}

void FiberMain() {
#ifdef GQA_SIM_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &t_block->sched_stack_bottom, &t_block->sched_stack_size);
#endif
  (*t_block->kernel)();
  Me().state = State::kDone;
  YieldToScheduler(true);
  __builtin_unreachable();
}

// Scheduler side of a switch into fiber f.
void SwitchTo(Block& b, Fiber& f) {
  b.current = &f;
  ++t_stats.fiber_switches;
#ifdef GQA_SIM_ASAN
  __sanitizer_start_switch_fiber(&b.sched_fake_stack, f.stack, kStackBytes);
#endif
  Switch(b.sched, f.ctx);
#ifdef GQA_SIM_ASAN
  __sanitizer_finish_switch_fiber(b.sched_fake_stack, nullptr, nullptr);
#endif
  b.current = nullptr;
}

std::string Where(const Fiber& f) {
  std::ostringstream s;
  s << "thread (" << f.tid.x << "," << f.tid.y << "," << f.tid.z << ")";
  return s.str();
}

std::string BlockName(const Block& b) {
  std::ostringstream s;
  s << "block (" << b.idx.x << "," << b.idx.y << "," << b.idx.z << ")";
  return s.str();
}

// Releases every warp collective whose lanes have all arrived. Returns false
// and sets b.error when a waiting collective can never complete.
bool ReleaseWarps(Block& b, bool* released) {
  const int n = b.num_threads;
  for (int w = 0; w * 32 < n; ++w) {
    const int first = w * 32, end = std::min(n, first + 32);
    int waiter = -1;
    for (int i = first; i < end; ++i) {
      if (b.fibers[i].state == State::kWarp) {
        waiter = i;
        break;
      }
    }
    if (waiter < 0) continue;
    const Fiber& lead = b.fibers[waiter];
    for (int lane = 0; lane < 32; ++lane) {
      if (!(lead.mask >> lane & 1u)) continue;
      const int i = first + lane;
      if (i >= n) {
        b.error = BlockName(b) + ": warp collective names lane " + std::to_string(lane) + " of a partial warp";
        return false;
      }
      const Fiber& f = b.fibers[i];
      if (f.state != State::kWarp || f.mask != lead.mask || f.op != lead.op) {
        b.error = BlockName(b) + ": warp collective of " + Where(lead) + " never completes: lane " +
                  std::to_string(lane) + (f.state == State::kDone ? " has exited"
                                          : f.state == State::kBarrier ? " waits at __syncthreads"
                                                                       : " waits at another warp collective");
        return false;
      }
    }
    for (int i = first; i < end; ++i) {
      Fiber& f = b.fibers[i];
      if (f.state == State::kWarp && f.mask != lead.mask) {
        b.error = BlockName(b) + ": lanes of one warp wait at collectives with different masks";
        return false;
      }
    }
    unsigned ballot = 0;
    for (int lane = 0; lane < 32; ++lane) {
      if ((lead.mask >> lane & 1u) && b.fibers[first + lane].value != 0) ballot |= 1u << lane;
    }
    for (int lane = 0; lane < 32; ++lane) {
      if (!(lead.mask >> lane & 1u)) continue;
      Fiber& f = b.fibers[first + lane];
      if (f.op == WarpOp::kExchange) {
        if (f.src < 0 || f.src >= 32 || !(lead.mask >> f.src & 1u)) {
          b.error = BlockName(b) + ": shuffle of " + Where(f) + " reads lane " + std::to_string(f.src) +
                    ", which is not in the mask";
          return false;
        }
        f.result = b.fibers[first + f.src].value;
      } else {
        f.result = ballot;
      }
      f.state = State::kRunnable;
    }
    *released = true;
  }
  return true;
}

bool ReleaseBarrier(Block& b, bool* released) {
  const Fiber* at = nullptr;
  const Fiber* done = nullptr;
  for (const Fiber& f : b.fibers) {
    if (f.state == State::kBarrier && at == nullptr) at = &f;
    if (f.state == State::kDone && done == nullptr) done = &f;
  }
  if (at == nullptr) return true;  // nobody waits
  if (done != nullptr) {
    b.error = BlockName(b) + ": divergent __syncthreads at " + at->bar_file + ":" + std::to_string(at->bar_line) +
              ": " + Where(*at) + " waits but " + Where(*done) + " has exited";
    return false;
  }
  for (const Fiber& f : b.fibers) {
    if (f.bar_file != at->bar_file || f.bar_line != at->bar_line) {
      b.error = BlockName(b) + ": divergent __syncthreads: " + Where(*at) + " at " + at->bar_file + ":" +
                std::to_string(at->bar_line) + ", " + Where(f) + " at " + f.bar_file + ":" +
                std::to_string(f.bar_line);
      return false;
    }
  }
  for (Fiber& f : b.fibers) f.state = State::kRunnable;
  *released = true;
  return true;
}

void Order(std::vector<int>& order, int n) {
  order.resize(n);
  std::iota(order.begin(), order.end(), 0);
  switch (t_schedule) {
    case Schedule::kForward:
      break;
    case Schedule::kReverse:
      std::reverse(order.begin(), order.end());
      break;
    case Schedule::kShuffled:
      std::shuffle(order.begin(), order.end(), t_rng);
      break;
    case Schedule::kWarpsReversed: {
      std::vector<int> o;
      o.reserve(n);
      for (int w = (n - 1) / 32; w >= 0; --w) {
        for (int i = w * 32; i < std::min(n, w * 32 + 32); ++i) o.push_back(i);
      }
      order = std::move(o);
      break;
    }
  }
}

std::string RunBlock(Block& b) {
  ++t_stats.blocks;
  for (int i = 0; i < b.num_threads; ++i) {
    Fiber& f = b.fibers[i];
    f = Fiber{};
    f.linear = i;
    f.tid.x = unsigned(i) % b.dim.x;
    f.tid.y = unsigned(i) / b.dim.x % b.dim.y;
    f.tid.z = unsigned(i) / (b.dim.x * b.dim.y);
    f.stack = t_stacks.Get(size_t(i));
    if (f.stack == nullptr) return "cannot map a fiber stack";
#ifdef GQA_SIM_ASAN
    // A reused stack still carries the redzones of the frames its last fiber
    // never returned from.
    __asan_unpoison_memory_region(f.stack, kStackBytes);
#endif
    MakeContext(f.ctx, f.stack, kStackBytes, &FiberMain);
  }
  std::vector<int> order;
  for (;;) {
    Order(order, b.num_threads);
    for (int i : order) {
      if (b.fibers[i].state == State::kRunnable) SwitchTo(b, b.fibers[i]);
    }
    if (!b.error.empty()) return b.error;
    bool all_done = true;
    for (const Fiber& f : b.fibers) all_done &= f.state == State::kDone;
    if (all_done) {
      FoldRequests(b);
      return {};
    }
    bool released = false;
    if (!ReleaseWarps(b, &released)) return b.error;
    if (released) continue;
    if (!ReleaseBarrier(b, &released)) return b.error;
    if (!released) return BlockName(b) + ": threads wait forever";
  }
}

}  // namespace

const char* ScheduleName(Schedule s) {
  switch (s) {
    case Schedule::kForward: return "forward";
    case Schedule::kReverse: return "reverse";
    case Schedule::kShuffled: return "shuffled";
    case Schedule::kWarpsReversed: return "warps-reversed";
  }
  return "?";
}

void SetSchedule(Schedule s, uint64_t seed) {
  t_schedule = s;
  t_rng.seed(seed);
}

Schedule CurrentSchedule() { return t_schedule; }

std::string RunGrid(Dim3 grid, Dim3 dim, const std::function<void()>& kernel) {
  if (t_block != nullptr) return "kernel launched from inside a kernel";
  ++t_stats.launches;
  Block b;
  b.grid = grid;
  b.dim = dim;
  b.num_threads = int(dim.x * dim.y * dim.z);
  b.fibers.resize(size_t(b.num_threads));
  b.kernel = &kernel;
  t_block = &b;
  std::string err;
  for (unsigned z = 0; z < grid.z && err.empty(); ++z) {
    for (unsigned y = 0; y < grid.y && err.empty(); ++y) {
      for (unsigned x = 0; x < grid.x && err.empty(); ++x) {
        b.idx = Uint3{x, y, z};
        err = RunBlock(b);
      }
    }
  }
  t_block = nullptr;
  return err;
}

const Uint3& ThreadIdx() { return Me().tid; }
const Uint3& BlockIdx() { return t_block->idx; }
const Dim3& BlockDim() { return t_block->dim; }
const Dim3& GridDim() { return t_block->grid; }
int LaneId() { return Me().linear & 31; }

void SyncThreads(const char* file, int line) {
  Fiber& f = Me();
  f.state = State::kBarrier;
  f.bar_file = file;
  f.bar_line = line;
  YieldToScheduler(false);
}

namespace {
// Waits at a warp collective until every lane of mask has arrived at it.
void Meet(WarpOp op, unsigned mask, uint64_t value = 0, int src = 0) {
  Fiber& f = Me();
  f.state = State::kWarp;
  f.op = op;
  f.mask = mask;
  f.value = value;
  f.src = src;
  YieldToScheduler(false);
}

uint64_t WarpCollective(WarpOp op, unsigned mask, uint64_t value, int src) {
  Meet(op, mask, value, src);
  // Every lane has read what it needs once it runs again: a second meeting
  // keeps a fast lane from overwriting its value before the others read it.
  const uint64_t result = Me().result;
  Meet(WarpOp::kSync, mask);
  return result;
}
}  // namespace

uint64_t WarpExchange(unsigned mask, uint64_t value, int src_lane) {
  if (!(mask >> LaneId() & 1u)) {
    t_block->error = BlockName(*t_block) + ": warp collective called by " + Where(Me()) + ", a lane outside its mask";
  }
  return WarpCollective(WarpOp::kExchange, mask, value, src_lane);
}

unsigned WarpBallot(unsigned mask, bool predicate) {
  return unsigned(WarpCollective(WarpOp::kBallot, mask, predicate ? 1 : 0, 0));
}

void WarpGather(unsigned mask, const void* mine, size_t bytes, void* all) {
  Block& b = *t_block;
  Fiber& f = Me();
  if (bytes > sizeof(f.blob)) {
    b.error = BlockName(b) + ": warp gather of more than 64 bytes per lane";
    bytes = sizeof(f.blob);
  }
  std::memcpy(f.blob, mine, bytes);
  Meet(WarpOp::kSync, mask);
  // Every lane of the mask has deposited; none overwrites its blob before
  // the second meeting below.
  const int first = f.linear & ~31;
  for (int lane = 0; lane < 32; ++lane) {
    if (mask >> lane & 1u) std::memcpy(static_cast<unsigned char*>(all) + lane * bytes, b.fibers[first + lane].blob, bytes);
  }
  Meet(WarpOp::kSync, mask);
}

void WarpSync(unsigned mask) { Meet(WarpOp::kSync, mask); }

Stats GetStats() { return t_stats; }

void AsyncCopy(void* dst, const void* src, size_t bytes) {
  Fiber& f = Me();
  f.pending.push_back({dst, src, bytes, f.open_group});
}

void AsyncCommit() { ++Me().open_group; }

void AsyncWait(int keep_groups) {
  Fiber& f = Me();
  // Committed groups are 0 .. open_group - 1; keep the newest keep_groups.
  const int retire_below = f.open_group - keep_groups;
  size_t kept = 0;
  for (size_t i = 0; i < f.pending.size(); ++i) {
    const Fiber::PendingCopy& c = f.pending[i];
    if (c.group < retire_below) {
      std::memcpy(c.dst, c.src, c.bytes);
    } else {
      f.pending[kept++] = c;
    }
  }
  f.pending.resize(kept);
}

void ResetTraffic() { t_traffic = Traffic{}; }
Traffic GetTraffic() { return t_traffic; }
void WatchRange(const void* begin, size_t bytes) {
  const auto b = reinterpret_cast<uintptr_t>(begin);
  t_watches.emplace_back(b, b + bytes);
}
void ClearWatches() { t_watches.clear(); }

void CountAccess(const void* p, size_t bytes, bool store, const char* file, int line) {
  Block& b = *t_block;
  Fiber& f = Me();
  // The site: file and line folded into one key (file names are literals).
  const void* site = reinterpret_cast<const char*>(file) + (uintptr_t(line) << 20);
  const uint32_t k = f.site_count[site]++;
  Request& r = b.requests[std::make_tuple(f.linear / 32, site, k)];
  r.store = store;
  const auto a = reinterpret_cast<uintptr_t>(p);
  if (r.addresses.insert(a).second) r.bytes += bytes;
  for (uintptr_t s = a / 32; s <= (a + bytes - 1) / 32; ++s) r.sectors.insert(s);
  for (const auto& [lo, hi] : t_watches) {
    if (a >= lo && a < hi) r.watched = true;
  }
}

}  // namespace gqa_sim
