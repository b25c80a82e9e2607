#include "engine/engine.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace gqa {

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return "none";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kAborted: return "aborted";
    case FinishReason::kError: return "error";
  }
  return "?";
}

Engine::Engine(std::unique_ptr<Executor> executor, const EngineOptions& options)
    : executor_(std::move(executor)), options_(options) {
  const ModelConfig& c = executor_->config();
  if (options_.max_model_len <= 0 || options_.max_model_len > c.max_position_embeddings) {
    options_.max_model_len = c.max_position_embeddings;
  }
  SchedulerConfig sc;
  sc.num_blocks = executor_->options().num_kv_blocks;
  sc.block_size = executor_->options().block_size;
  sc.max_num_seqs = std::max(1, options_.max_num_seqs);
  sc.max_num_batched_tokens = std::max(1, options_.max_num_batched_tokens);
  sc.max_model_len = options_.max_model_len;
  sc.enable_prefix_caching = options_.enable_prefix_caching;
  scheduler_ = std::make_unique<Scheduler>(sc);
  stats_.total_blocks = sc.num_blocks;
  loop_ = std::thread([this] { Loop(); });
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  loop_.join();
}

absl::StatusOr<int64_t> Engine::Submit(GenerationRequest request, OutputCallback callback) {
  const int vocab = executor_->config().vocab_size;
  for (int32_t t : request.prompt) {
    if (t < 0 || t >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("prompt token id ", t, " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  for (int32_t t : request.stop_token_ids) {
    if (t < 0 || t >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("stop token id ", t, " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  RETURN_IF_ERROR(ValidateSamplingParams(request.sampling, vocab));
  std::lock_guard<std::mutex> lock(mu_);
  if (stop_) return absl::UnavailableError("the engine is shutting down");
  const int64_t id = next_id_++;
  RETURN_IF_ERROR(scheduler_->Add(id, request.prompt, request.max_tokens, request.cache_salt));
  stats_.prompt_tokens += int64_t(request.prompt.size());
  // Unseeded requests get a seed derived from the engine's seed and the id.
  const uint64_t fallback = options_.seed * 0x9e3779b97f4a7c15ull + uint64_t(id);
  Sampler sampler(request.sampling, fallback);
  requests_.emplace(id, Request{std::move(request), std::move(sampler), std::move(callback),
                               std::chrono::steady_clock::now()});
  cv_.notify_all();
  return id;
}

void Engine::Abort(int64_t id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!requests_.count(id)) return;
    aborts_.push_back(id);
  }
  cv_.notify_all();
}

EngineStats Engine::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  EngineStats s = stats_;
  s.running = scheduler_->num_running();
  s.waiting = scheduler_->num_waiting();
  s.free_blocks = scheduler_->num_free_blocks();
  s.cached_blocks = scheduler_->num_cached_free_blocks();
  s.prefix_cache_queries = scheduler_->prefix_cache_queries();
  s.prefix_cache_hits = scheduler_->prefix_cache_hits();
  s.preemptions = scheduler_->num_preemptions();
  return s;
}

void Engine::Finish(int64_t id, FinishReason reason, absl::Status error, RequestOutput* out) {
  const SeqState* seq = scheduler_->Find(id);
  out->id = id;
  out->finished = true;
  out->reason = reason;
  out->error = std::move(error);
  if (seq != nullptr) {
    out->prompt_tokens = seq->prompt_len;
    out->completion_tokens = seq->num_generated();
    out->cached_tokens = seq->num_cached_tokens;
  }
  scheduler_->Remove(id);
}

void Engine::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] {
      return stop_ || !aborts_.empty() || scheduler_->num_waiting() + scheduler_->num_running() > 0;
    });
    Events events;
    if (stop_) {
      for (auto& [id, req] : requests_) {
        RequestOutput out;
        Finish(id, FinishReason::kAborted, absl::OkStatus(), &out);
        events.emplace_back(req.callback, std::move(out));
      }
      requests_.clear();
      lock.unlock();
      for (auto& [cb, out] : events) cb(out);
      return;
    }
    for (int64_t id : std::exchange(aborts_, {})) {
      auto it = requests_.find(id);
      if (it == requests_.end()) continue;
      RequestOutput out;
      Finish(id, FinishReason::kAborted, absl::OkStatus(), &out);
      events.emplace_back(std::move(it->second.callback), std::move(out));
      requests_.erase(it);
    }
    if (scheduler_->num_waiting() + scheduler_->num_running() > 0) RunStep(lock, &events);
    lock.unlock();
    for (auto& [cb, out] : events) cb(out);
    lock.lock();
  }
}

void Engine::RunStep(std::unique_lock<std::mutex>& lock, Events* events) {
  SchedulerOutput out = scheduler_->Schedule();
  if (out.empty()) return;
  const int bs = scheduler_->config().block_size;
  StepBatch batch;
  size_t max_blocks = 1;
  for (const ScheduledSeq& s : out.seqs) max_blocks = std::max(max_blocks, s.seq->blocks.size());
  batch.max_blocks_per_seq = static_cast<int>(max_blocks);
  StepSampling sampling;
  for (size_t i = 0; i < out.seqs.size(); ++i) {
    const ScheduledSeq& s = out.seqs[i];
    std::vector<int32_t> table = s.seq->blocks;
    table.resize(max_blocks, -1);
    batch.block_tables.insert(batch.block_tables.end(), table.begin(), table.end());
    for (int p = s.start; p < s.start + s.count; ++p) {
      batch.token_ids.push_back(s.seq->tokens[p]);
      batch.positions.push_back(p);
      batch.token_seq.push_back(static_cast<int32_t>(i));
      batch.slot_mapping.push_back(s.seq->blocks[p / bs] * bs + p % bs);
    }
    Request& req = requests_.at(s.seq->id);
    if (s.samples) {
      batch.logits_rows.push_back(batch.num_tokens() - 1);
      sampling.rows.push_back(req.sampler.NextRow(s.seq->tokens, s.seq->prompt_len, &sampling.penalties));
    }
    if (req.queue_seconds < 0) {
      req.queue_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - req.submitted).count();
    }
  }

  // The step runs without the lock: Submit and Abort stay responsive.
  lock.unlock();
  std::vector<SampleOutput> sampled;
  const absl::Status st = executor_->Step(batch, sampling, &sampled);
  lock.lock();
  ++stats_.steps;

  if (!st.ok()) {
    // A device error fails the requests of this step; the others go on.
    for (const ScheduledSeq& s : out.seqs) {
      const int64_t id = s.seq->id;
      auto it = requests_.find(id);
      RequestOutput ev;
      Finish(id, FinishReason::kError, st, &ev);
      events->emplace_back(std::move(it->second.callback), std::move(ev));
      requests_.erase(it);
    }
    return;
  }
  scheduler_->Commit(out);
  const std::vector<int>& eos = executor_->config().eos_token_ids;
  int row = 0;
  for (const ScheduledSeq& s : out.seqs) {
    if (!s.samples) continue;
    const int64_t id = s.seq->id;
    Request& req = requests_.at(id);
    SampledToken tok = Sampler::ToToken(sampled[row++]);
    scheduler_->AppendToken(id, tok.token);
    ++stats_.generated_tokens;
    RequestOutput ev;
    ev.id = id;
    if (!req.queue_reported) {
      ev.queue_seconds = req.queue_seconds;
      req.queue_reported = true;
    }
    ev.prompt_tokens = s.seq->prompt_len;
    ev.completion_tokens = s.seq->num_generated();
    ev.cached_tokens = s.seq->num_cached_tokens;
    const int32_t t = tok.token;
    ev.tokens.push_back(std::move(tok));
    const auto& stops = req.params.stop_token_ids;
    FinishReason reason = FinishReason::kNone;
    if (std::find(stops.begin(), stops.end(), t) != stops.end() ||
        (!req.params.ignore_eos && std::find(eos.begin(), eos.end(), t) != eos.end())) {
      reason = FinishReason::kStop;
    } else if (s.seq->num_generated() >= req.params.max_tokens) {
      reason = FinishReason::kLength;
    }
    if (reason != FinishReason::kNone) {
      std::vector<SampledToken> toks = std::move(ev.tokens);
      Finish(id, reason, absl::OkStatus(), &ev);
      ev.tokens = std::move(toks);
      events->emplace_back(std::move(req.callback), std::move(ev));
      requests_.erase(id);
    } else {
      events->emplace_back(req.callback, std::move(ev));
    }
  }
}

}  // namespace gqa
