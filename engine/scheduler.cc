#include "engine/scheduler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace gqa {

Scheduler::Scheduler(const SchedulerConfig& config)
    : config_(config),
      pool_(std::max(config.num_blocks, 1), std::max(config.block_size, 1), config.enable_prefix_caching) {
  GQA_CHECK(config.block_size > 0 && config.num_blocks > 0, "scheduler needs blocks");
  GQA_CHECK(config.max_num_seqs > 0 && config.max_num_batched_tokens > 0, "scheduler needs a budget");
}

absl::Status Scheduler::Add(int64_t id, std::vector<int32_t> prompt, int max_new_tokens, std::string cache_salt) {
  if (seqs_.count(id)) return absl::AlreadyExistsError(absl::StrCat("request id ", id, " is already queued"));
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
  if (max_new_tokens < 1) return absl::InvalidArgumentError("max_tokens must be at least 1");
  const int64_t total = int64_t(prompt.size()) + max_new_tokens;
  if (total > config_.max_model_len) {
    return absl::InvalidArgumentError(absl::StrCat("prompt (", prompt.size(), " tokens) + max_tokens (", max_new_tokens,
                                                   ") = ", total, " exceeds the maximum model length ",
                                                   config_.max_model_len));
  }
  // The last generated token is never fed back, so total - 1 positions need K/V.
  // A request larger than the whole cache can never run: a client error.
  const int blocks = BlocksFor(total - 1);
  if (blocks > config_.num_blocks) {
    return absl::InvalidArgumentError(absl::StrCat("prompt + max_tokens need ", blocks, " KV blocks of ",
                                                   config_.block_size, " tokens; the whole cache has ",
                                                   config_.num_blocks, ", so this request can never run: "
                                                   "lower max_tokens or shorten the prompt"));
  }
  auto seq = std::make_unique<SeqState>();
  seq->id = id;
  seq->prompt_len = static_cast<int>(prompt.size());
  seq->tokens = std::move(prompt);
  seq->max_new_tokens = max_new_tokens;
  seq->cache_salt = std::move(cache_salt);
  waiting_.push_back(seq.get());
  seqs_[id] = std::move(seq);
  return absl::OkStatus();
}

bool Scheduler::EnsureBlocks(SeqState& seq, int positions) {
  const int need = BlocksFor(positions) - static_cast<int>(seq.blocks.size());
  if (need <= 0) return true;
  if (need > pool_.num_free()) return false;
  for (int i = 0; i < need; ++i) seq.blocks.push_back(pool_.Allocate());
  return true;
}

void Scheduler::FreeBlocks(SeqState& seq) {
  pool_.Release(seq.blocks);
  seq.blocks.clear();
  seq.num_registered = 0;
}

void Scheduler::HashFullBlocks(SeqState& seq) {
  const int bs = config_.block_size;
  const size_t full = seq.tokens.size() / bs;
  while (seq.block_hashes.size() < full) {
    const size_t i = seq.block_hashes.size();
    const uint64_t parent = i == 0 ? pool_.RootHash(seq.cache_salt) : seq.block_hashes[i - 1];
    seq.block_hashes.push_back(pool_.ChainHash(parent, seq.tokens.data() + i * bs));
  }
}

void Scheduler::RegisterComputed(SeqState& seq) {
  if (!pool_.caching()) return;
  const int bs = config_.block_size;
  const int full = std::min<int>(seq.num_computed / bs, int(seq.blocks.size()));
  if (seq.num_registered >= full) return;
  HashFullBlocks(seq);
  for (int i = seq.num_registered; i < full; ++i) {
    pool_.Register(seq.blocks[i], seq.block_hashes[i], i == 0 ? -1 : seq.blocks[i - 1],
                   seq.tokens.data() + int64_t{i} * bs, seq.cache_salt);
  }
  seq.num_registered = full;
}

void Scheduler::Preempt(SeqState& seq) {
  FreeBlocks(seq);
  seq.num_computed = 0;  // recomputed from its tokens (prompt + generated) when readmitted
  ++seq.num_preemptions;
  ++num_preemptions_;
  running_.erase(std::find(running_.begin(), running_.end(), &seq));
  waiting_.push_front(&seq);
}

SchedulerOutput Scheduler::Schedule() {
  SchedulerOutput out;
  int budget = config_.max_num_batched_tokens;

  // 1. Running sequences, oldest first.
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    SeqState& seq = *running_[i];
    const int remaining = static_cast<int>(seq.tokens.size()) - seq.num_computed;
    const int n = std::min(remaining, budget);
    bool self_preempted = false;
    while (!EnsureBlocks(seq, seq.num_computed + n)) {
      SeqState& victim = *running_.back();  // the most recently admitted
      if (&victim == &seq) {
        self_preempted = true;
        break;
      }
      Preempt(victim);
      out.preempted.push_back(victim.id);
    }
    if (self_preempted) {
      Preempt(seq);
      out.preempted.push_back(seq.id);
      continue;  // running_[i] is now the next sequence
    }
    out.seqs.push_back({&seq, seq.num_computed, n, seq.num_computed + n == static_cast<int>(seq.tokens.size())});
    budget -= n;
    ++i;
  }

  // 2. Admissions, in arrival order, never overtaking a sequence that does
  // not fit and never readmitting one preempted in this call.
  while (!waiting_.empty() && budget > 0 && static_cast<int>(running_.size()) < config_.max_num_seqs) {
    SeqState& seq = *waiting_.front();
    if (std::find(out.preempted.begin(), out.preempted.end(), seq.id) != out.preempted.end()) break;
    const int len = static_cast<int>(seq.tokens.size());
    if (pool_.caching()) {
      // The last token is always computed: its logits give the next token.
      HashFullBlocks(seq);
      seq.blocks = pool_.TakeCached(seq.block_hashes, seq.tokens, seq.cache_salt, (len - 1) / config_.block_size);
    }
    const int start = static_cast<int>(seq.blocks.size()) * config_.block_size;
    const int n = std::min(len - start, budget);
    if (!EnsureBlocks(seq, start + n)) {
      FreeBlocks(seq);
      break;
    }
    seq.num_computed = start;
    seq.num_registered = start / config_.block_size;
    if (!seq.admitted) seq.num_cached_tokens = start;
    seq.admitted = true;
    if (pool_.caching()) {
      prefix_queries_ += len;
      prefix_hits_ += start;
    }
    waiting_.pop_front();
    running_.push_back(&seq);
    out.seqs.push_back({&seq, start, n, start + n == len});
    budget -= n;
  }
  out.num_tokens = config_.max_num_batched_tokens - budget;
  return out;
}

void Scheduler::Commit(const SchedulerOutput& out) {
  for (const ScheduledSeq& s : out.seqs) {
    s.seq->num_computed = s.start + s.count;
    RegisterComputed(*s.seq);
  }
}

void Scheduler::AppendToken(int64_t id, int32_t token) {
  auto it = seqs_.find(id);
  GQA_CHECK(it != seqs_.end(), "token for an unknown sequence");
  it->second->tokens.push_back(token);
}

bool Scheduler::Remove(int64_t id) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return false;
  SeqState* seq = it->second.get();
  FreeBlocks(*seq);
  if (auto r = std::find(running_.begin(), running_.end(), seq); r != running_.end()) running_.erase(r);
  if (auto w = std::find(waiting_.begin(), waiting_.end(), seq); w != waiting_.end()) waiting_.erase(w);
  seqs_.erase(it);
  return true;
}

const SeqState* Scheduler::Find(int64_t id) const {
  auto it = seqs_.find(id);
  return it == seqs_.end() ? nullptr : it->second.get();
}

}  // namespace gqa
