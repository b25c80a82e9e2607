#include "kernels/cpu/thread_pool.h"

#include <algorithm>

#if defined(__x86_64__)
#include <immintrin.h>
#define GQA_PAUSE() _mm_pause()
#else
#define GQA_PAUSE() std::this_thread::yield()
#endif

namespace gqa {
namespace {
// About half a millisecond of polling before a worker goes to sleep: ops of
// one forward pass follow each other closely, requests may not.
constexpr int kSpinIterations = 8000;
}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  for (int i = 1; i < std::max(1, num_threads); ++i) {
    workers_.emplace_back([this, i] { WorkerLoop(i); });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::RunChunk(int index) {
  const int64_t n = num_tasks_;
  const int t = active_threads_;
  const int64_t begin = n * index / t;
  const int64_t end = n * (index + 1) / t;
  if (begin < end) (*fn_)(begin, end);
}

void ThreadPool::ParallelFor(int64_t num_tasks, const RangeFn& fn) {
  if (num_tasks <= 0) return;
  const int threads = static_cast<int>(std::min<int64_t>(size(), num_tasks));
  if (threads == 1) {
    fn(0, num_tasks);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = &fn;
    num_tasks_ = num_tasks;
    active_threads_ = threads;
    pending_.store(threads - 1);
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  RunChunk(0);
  for (int i = 0; pending_.load(std::memory_order_acquire) != 0; ++i) {
    if (i < kSpinIterations) {
      GQA_PAUSE();
    } else {
      std::unique_lock<std::mutex> lock(mu_);
      done_cv_.wait(lock, [this] { return pending_.load() == 0; });
    }
  }
}

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t gen = generation_.load(std::memory_order_acquire);
    for (int i = 0; gen == seen && i < kSpinIterations; ++i) {
      GQA_PAUSE();
      gen = generation_.load(std::memory_order_acquire);
    }
    bool participate;
    {
      // Read the generation and its split together: a worker that lagged
      // behind a call it did not take part in must not mix two calls.
      std::unique_lock<std::mutex> lock(mu_);
      if (gen == seen) wake_.wait(lock, [&] { return generation_.load() != seen; });
      seen = generation_.load();
      if (stop_.load()) return;
      participate = index < active_threads_;
    }
    if (!participate) continue;
    RunChunk(index);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mu_);
      done_cv_.notify_one();
    }
  }
}

}  // namespace gqa
