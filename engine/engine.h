// The serving engine: requests in, token events out. One loop thread runs
// steps of continuous batching (Scheduler) on the Executor, which samples
// each request on the device with the parameters and uniform of its own
// Sampler. Thread-safe; callbacks run on the loop thread, outside the
// engine's lock, and may call Submit or Abort.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "worker/executor.h"

namespace gqa {

enum class FinishReason { kNone, kStop, kLength, kAborted, kError };
const char* FinishReasonName(FinishReason r);  // "stop", "length", "aborted", "error"

struct GenerationRequest {
  std::vector<int32_t> prompt;
  int max_tokens = 16;
  SamplingParams sampling;
  std::vector<int32_t> stop_token_ids;  // finish (reason stop) after emitting one of these
  bool ignore_eos = false;              // otherwise the model's eos_token_id stops too
  // Prefix-cache isolation: blocks cached under one salt are never reused
  // for a request with another (tenants apart; hits are visible in timing).
  std::string cache_salt;
};

// One event of a request: new tokens, and at the end the finish.
struct RequestOutput {
  int64_t id = 0;
  std::vector<SampledToken> tokens;
  bool finished = false;
  FinishReason reason = FinishReason::kNone;
  absl::Status error;  // set when reason is kError
  int prompt_tokens = 0;
  int completion_tokens = 0;  // generated so far
  int cached_tokens = 0;      // prompt tokens whose K/V came from the prefix cache
  double queue_seconds = -1;  // on the first event: time from Submit to first scheduling
};
using OutputCallback = std::function<void(const RequestOutput&)>;

struct EngineOptions {
  int max_num_seqs = 256;
  int max_num_batched_tokens = 2048;
  int max_model_len = 0;  // 0: the model's max_position_embeddings
  uint64_t seed = 0;      // seeds requests that carry no seed of their own
  // Automatic prefix caching (--enable-prefix-caching, on by default).
  bool enable_prefix_caching = true;
};

struct EngineStats {
  int running = 0;
  int waiting = 0;
  int free_blocks = 0;         // held by no sequence (cached_blocks of them still cache a prefix)
  int cached_blocks = 0;
  int total_blocks = 0;
  int64_t prefix_cache_queries = 0;  // prompt tokens looked up in the prefix cache at admission
  int64_t prefix_cache_hits = 0;     // of them, found

  // Blocks held by requests, and free blocks that keep a cached prefix, as
  // fractions of all blocks.
  double KvUsedFraction() const { return total_blocks ? 1.0 - double(free_blocks) / total_blocks : 0.0; }
  double KvCachedFraction() const { return total_blocks ? double(cached_blocks) / total_blocks : 0.0; }
  int64_t preemptions = 0;
  int64_t prompt_tokens = 0;      // prompt tokens of admitted requests
  int64_t generated_tokens = 0;
  int64_t steps = 0;
};

class Engine {
 public:
  Engine(std::unique_ptr<Executor> executor, const EngineOptions& options);
  ~Engine();  // requests still in flight finish as aborted

  // Queues a request and returns its id, or refuses it at once (bad token
  // ids or sampling fields, or a request that can never fit) with a clear
  // error; a refused request has no events.
  absl::StatusOr<int64_t> Submit(GenerationRequest request, OutputCallback callback);
  // Finishes the request with reason aborted and frees its KV blocks before
  // the next step. Unknown or finished ids are ignored.
  void Abort(int64_t id);

  EngineStats Stats() const;
  const Executor& executor() const { return *executor_; }
  const EngineOptions& options() const { return options_; }
  int max_model_len() const { return options_.max_model_len; }

 private:
  struct Request {
    GenerationRequest params;
    Sampler sampler;
    OutputCallback callback;
    std::chrono::steady_clock::time_point submitted;
    double queue_seconds = -1;  // set when first scheduled, reported once
    bool queue_reported = false;
  };
  using Events = std::vector<std::pair<OutputCallback, RequestOutput>>;

  void Loop();
  // Runs one scheduled step; appends the events to deliver.
  void RunStep(std::unique_lock<std::mutex>& lock, Events* events);
  void Finish(int64_t id, FinishReason reason, absl::Status error, RequestOutput* out);

  std::unique_ptr<Executor> executor_;
  EngineOptions options_;
  std::unique_ptr<Scheduler> scheduler_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<int64_t, Request> requests_;
  std::vector<int64_t> aborts_;
  int64_t next_id_ = 1;
  bool stop_ = false;
  EngineStats stats_;
  std::thread loop_;
};

}  // namespace gqa
