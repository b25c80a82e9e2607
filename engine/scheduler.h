// Continuous batching without a model: waiting and running queues, a token
// budget per step, KV block assignment, chunked prefill and preemption by
// recomputation. The engine feeds it requests and sampled tokens; tests
// drive it directly.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <vector>

#include "base/common.h"
#include "worker/kv_cache.h"

namespace gqa {

struct SchedulerConfig {
  int num_blocks = 0;
  int block_size = 16;
  int max_num_seqs = 256;             // running sequences at most
  int max_num_batched_tokens = 2048;  // tokens per step at most (prefill chunks + decodes)
  int max_model_len = 0;              // prompt + generated tokens at most
};

// The scheduler's view of one request.
struct SeqState {
  int64_t id = 0;
  std::vector<int32_t> tokens;  // prompt, then generated tokens
  int prompt_len = 0;
  int max_new_tokens = 0;
  int num_computed = 0;         // leading tokens whose K/V are in the cache
  std::vector<int32_t> blocks;  // block table
  int num_preemptions = 0;

  int num_generated() const { return static_cast<int>(tokens.size()) - prompt_len; }
  bool prefilling() const { return num_computed < static_cast<int>(tokens.size()) - 1; }
};

// One sequence's share of a step: tokens [start, start + count) run; when
// the chunk reaches the last known token, a new token is sampled after it.
struct ScheduledSeq {
  SeqState* seq = nullptr;
  int start = 0;
  int count = 0;
  bool samples = false;
};

struct SchedulerOutput {
  std::vector<ScheduledSeq> seqs;
  std::vector<int64_t> preempted;  // preempted during this call
  int num_tokens = 0;
  bool empty() const { return seqs.empty(); }
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerConfig& config);

  // Queues a request, or refuses it at once if it can never run: an empty
  // prompt, no room for a token, more than max_model_len tokens, or more
  // blocks than the whole cache.
  absl::Status Add(int64_t id, std::vector<int32_t> prompt, int max_new_tokens);

  // Forms the next step: running sequences first (oldest first: decodes and
  // prefill chunks), preempting the newest running sequences when blocks
  // run out; then waiting sequences in arrival order while sequence count,
  // token budget and free blocks allow.
  SchedulerOutput Schedule();

  // After the step ran: the scheduled tokens now have K/V in the cache.
  void Commit(const SchedulerOutput& out);
  // A sampled token for a sequence whose chunk had samples = true.
  void AppendToken(int64_t id, int32_t token);
  // Removes a finished or aborted request and frees its blocks; false if unknown.
  bool Remove(int64_t id);

  const SeqState* Find(int64_t id) const;
  int num_waiting() const { return static_cast<int>(waiting_.size()); }
  int num_running() const { return static_cast<int>(running_.size()); }
  int num_free_blocks() const { return allocator_.num_free(); }
  int64_t num_preemptions() const { return num_preemptions_; }
  const SchedulerConfig& config() const { return config_; }
  // Blocks a sequence of `tokens` K/V positions needs.
  int BlocksFor(int64_t tokens) const { return static_cast<int>((tokens + config_.block_size - 1) / config_.block_size); }

 private:
  // Grows seq's block table to cover `positions` K/V slots; false if not enough free blocks.
  bool EnsureBlocks(SeqState& seq, int positions);
  void FreeBlocks(SeqState& seq);
  void Preempt(SeqState& seq);

  SchedulerConfig config_;
  BlockAllocator allocator_;
  std::map<int64_t, std::unique_ptr<SeqState>> seqs_;
  std::deque<SeqState*> waiting_;  // arrival order; preempted ones go to the front
  std::vector<SeqState*> running_;  // admission order
  int64_t num_preemptions_ = 0;
};

}  // namespace gqa
