// A fixed pool of worker threads for splitting one op across CPU cores. The
// calling thread takes part; idle workers spin briefly, then sleep.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace gqa {

class ThreadPool {
 public:
  // num_threads counts the caller; 1 means everything runs inline.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs fn(begin, end) over contiguous chunks covering [0, num_tasks), at
  // most one chunk per thread, and returns when all chunks are done. Chunks
  // are split evenly and deterministically (the same split every call).
  using RangeFn = std::function<void(int64_t begin, int64_t end)>;
  void ParallelFor(int64_t num_tasks, const RangeFn& fn);

 private:
  void WorkerLoop(int index);
  void RunChunk(int index);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable done_cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  const RangeFn* fn_ = nullptr;
  int64_t num_tasks_ = 0;
  int active_threads_ = 0;
};

}  // namespace gqa
