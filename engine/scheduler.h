// Continuous batching without a model: waiting and running queues, a token
// budget per step, KV block assignment with automatic prefix caching
// (engine/block_pool.h), chunked prefill and preemption by recomputation.
// The engine feeds it requests and sampled tokens; tests drive it directly.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/common.h"
#include "engine/block_pool.h"

namespace gqa {

struct SchedulerConfig {
  int num_blocks = 0;
  int block_size = 16;
  int max_num_seqs = 256;             // running sequences at most
  int max_num_batched_tokens = 2048;  // tokens per step at most (prefill chunks + decodes)
  int max_model_len = 0;              // prompt + generated tokens at most
  // Full blocks of computed K/V are kept under a hash of their prefix and
  // reused by later sequences that start with the same tokens and salt.
  bool enable_prefix_caching = false;
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
  std::string cache_salt;                // keeps the sequence's cached blocks apart from other salts'
  std::vector<uint64_t> block_hashes;    // chained hashes of the full blocks of `tokens`
  int num_registered = 0;                // leading blocks registered in the prefix cache
  int num_cached_tokens = 0;             // tokens found in the prefix cache at the first admission
  bool admitted = false;                 // admitted at least once

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
  absl::Status Add(int64_t id, std::vector<int32_t> prompt, int max_new_tokens, std::string cache_salt = "");

  // Forms the next step: running sequences first (oldest first: decodes and
  // prefill chunks), preempting the newest running sequences when blocks
  // run out; then waiting sequences in arrival order while sequence count,
  // token budget and free blocks allow. An admitted sequence first takes
  // the longest run of cached full blocks of its tokens (never its last
  // token, whose logits it needs) and prefills only the rest.
  SchedulerOutput Schedule();

  // After the step ran: the scheduled tokens now have K/V in the cache, and
  // the blocks they filled join the prefix cache.
  void Commit(const SchedulerOutput& out);
  // A sampled token for a sequence whose chunk had samples = true.
  void AppendToken(int64_t id, int32_t token);
  // Removes a finished or aborted request and frees its blocks; false if unknown.
  bool Remove(int64_t id);

  const SeqState* Find(int64_t id) const;
  int num_waiting() const { return static_cast<int>(waiting_.size()); }
  int num_running() const { return static_cast<int>(running_.size()); }
  // Blocks no sequence holds (some still cache a prefix).
  int num_free_blocks() const { return pool_.num_free(); }
  // Free blocks that still cache a prefix.
  int num_cached_free_blocks() const { return pool_.num_cached_free(); }
  // Tokens of admitted sequences looked up in the prefix cache, and found.
  int64_t prefix_cache_queries() const { return prefix_queries_; }
  int64_t prefix_cache_hits() const { return prefix_hits_; }
  int64_t num_preemptions() const { return num_preemptions_; }
  const SchedulerConfig& config() const { return config_; }
  // Blocks a sequence of `tokens` K/V positions needs.
  int BlocksFor(int64_t tokens) const { return static_cast<int>((tokens + config_.block_size - 1) / config_.block_size); }

 private:
  // Grows seq's block table to cover `positions` K/V slots; false if not enough free blocks.
  bool EnsureBlocks(SeqState& seq, int positions);
  void FreeBlocks(SeqState& seq);
  void Preempt(SeqState& seq);
  // Hashes of the full blocks of seq.tokens not hashed yet.
  void HashFullBlocks(SeqState& seq);
  // Registers the blocks that num_computed has filled.
  void RegisterComputed(SeqState& seq);

  SchedulerConfig config_;
  BlockPool pool_;
  std::map<int64_t, std::unique_ptr<SeqState>> seqs_;
  std::deque<SeqState*> waiting_;  // arrival order; preempted ones go to the front
  std::vector<SeqState*> running_;  // admission order
  int64_t num_preemptions_ = 0;
  int64_t prefix_queries_ = 0, prefix_hits_ = 0;
};

}  // namespace gqa
