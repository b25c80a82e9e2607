#include "worker/executor.h"

#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"

namespace gqa {

absl::StatusOr<std::unique_ptr<Executor>> Executor::Open(const std::string& dir, const ExecutorOptions& options) {
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig((std::filesystem::path(dir) / "config.json").string()));
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt, Checkpoint::OpenDirectory(dir));
  return Create(config, std::move(ckpt), options);
}

absl::StatusOr<std::unique_ptr<Executor>> Executor::Create(const ModelConfig& config,
                                                           std::unique_ptr<Checkpoint> checkpoint,
                                                           const ExecutorOptions& options) {
  if (options.tp < 1 || options.tp > 64) return absl::InvalidArgumentError(absl::StrCat("--tp ", options.tp, " must be in 1..64"));
  if (options.num_kv_blocks < 1 || options.block_size < 1) {
    return absl::InvalidArgumentError("the KV cache needs at least one block of at least one token");
  }
  auto ex = std::unique_ptr<Executor>(new Executor());
  ex->config_ = config;
  ex->options_ = options;
  if (ex->options_.threads_per_rank <= 0) {
    ex->options_.threads_per_rank = std::max(1, int(std::thread::hardware_concurrency()) / options.tp);
  }
  ASSIGN_OR_RETURN(ex->plan_, MakeShardPlan(config.num_q_heads, config.num_kv_heads, options.tp,
                                            config.intermediate_size, config.vocab_size));
  if (options.max_step_tokens < 1 || options.max_step_seqs < 1) {
    return absl::InvalidArgumentError("the largest step needs at least one token and one sequence");
  }
  ex->checkpoint_ = std::move(checkpoint);
  ASSIGN_OR_RETURN(ex->group_, DeviceGroup::Create(options.device, options.tp, ex->options_.threads_per_rank));
  for (int r = 0; r < options.tp; ++r) ex->workers_.push_back(std::make_unique<Worker>());
  // Each rank is set up on its own thread (its device is current there), all
  // at once: NCCL's initialisation waits for every rank of the group.
  // An exception in a rank becomes its error (and releases the others); a
  // thread that cannot start fails the ranks not yet started. Every thread
  // started is joined before returning.
  Executor* self = ex.get();
  std::vector<std::thread> setup;
  for (int r = 0; r < options.tp; ++r) {
    try {
      setup.emplace_back([self, r] { self->workers_[r]->result = self->GuardedSetUpRank(r); });
    } catch (const std::system_error& e) {
      const absl::Status st = absl::ResourceExhaustedError(absl::StrCat("cannot start a thread for rank ", r, ": ", e.what()));
      for (int q = r; q < options.tp; ++q) ex->workers_[q]->result = st;
      ex->group_->Abort(st);
      break;
    }
  }
  for (std::thread& t : setup) t.join();
  RETURN_IF_ERROR(ex->RootCause());
  for (int r = 1; r < options.tp; ++r) {
    try {
      ex->workers_[r]->thread = std::thread([self, r] { self->WorkerLoop(r); });
    } catch (const std::system_error& e) {
      // ~Executor stops and joins the loops already started.
      return absl::ResourceExhaustedError(absl::StrCat("cannot start a thread for rank ", r, ": ", e.what()));
    }
  }
  return ex;
}

absl::Status Executor::RootCause() const {
  // A rank's own error rather than the aborts it caused in the others.
  absl::Status first;
  for (const auto& w : workers_) {
    if (w->result.ok()) continue;
    if (first.ok() || (absl::IsAborted(first) && !absl::IsAborted(w->result))) first = w->result;
  }
  return first;
}

absl::Status Executor::GuardedSetUpRank(int r) {
  absl::Status st;
  try {
    st = SetUpRank(r);
  } catch (const std::exception& e) {
    st = absl::InternalError(absl::StrCat("setting up rank ", r, ": ", e.what()));
  } catch (...) {
    st = absl::InternalError(absl::StrCat("setting up rank ", r, ": unknown exception"));
  }
  // A rank that fails must not leave the others waiting in a collective.
  if (!st.ok()) group_->Abort(st);
  return st;
}

absl::Status Executor::SetUpRank(int r) {
  Worker& w = *workers_[r];
  RETURN_IF_ERROR(group_->InitRank(r));  // GuardedSetUpRank aborts the group on failure
  w.backend = group_->backend(r);
  RETURN_IF_ERROR(w.backend->MakeCurrent());
  ASSIGN_OR_RETURN(w.model, Model::Load(config_, *checkpoint_, plan_, w.backend, group_->comm(r), options_.load_counter));
  const int max_blocks = config_.max_position_embeddings / options_.block_size + 1;
  int penalties = options_.max_step_penalty_entries;
  if (penalties <= 0) {
    penalties = int(std::min<int64_t>(int64_t{options_.max_step_seqs} *
                                          std::min(config_.vocab_size, config_.max_position_embeddings),
                                      int64_t{1} << 21));
  }
  RETURN_IF_ERROR(w.model->ReserveWorkspace(options_.max_step_tokens, options_.max_step_seqs, max_blocks, penalties));
  const KvCacheLayout layout = w.model->CacheLayout(options_.num_kv_blocks, options_.block_size, options_.kv_dtype);
  ASSIGN_OR_RETURN(KvCache cache, KvCache::Create(w.backend, config_.num_layers, layout));
  w.cache = std::make_unique<KvCache>(std::move(cache));
  return absl::OkStatus();
}

ThreadPool* Executor::rank0_pool() {
  auto* cpu = dynamic_cast<CpuBackend*>(workers_[0]->backend);
  return cpu == nullptr ? nullptr : cpu->pool();
}

Executor::~Executor() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  start_cv_.notify_all();
  for (auto& w : workers_) {
    if (w->thread.joinable()) w->thread.join();
  }
}

int64_t Executor::KvCacheBytes(int rank) const {
  return int64_t{config_.num_layers} * workers_[rank]->cache->BytesPerLayer();
}

void Executor::InjectFaultForTesting(int rank, absl::Status error) {
  std::lock_guard<std::mutex> lock(mu_);
  workers_[rank]->injected_fault = std::move(error);
}

void Executor::RunRank(int rank) {
  Worker& w = *workers_[rank];
  absl::Status st;
  {
    std::lock_guard<std::mutex> lock(mu_);
    st = std::exchange(w.injected_fault, absl::OkStatus());
  }
  if (st.ok()) st = w.backend->MakeCurrent();
  if (st.ok()) {
    st = w.model->Forward(*batch_, *w.cache, sampling_, rank == 0 ? &w.samples : nullptr,
                          rank == 0 && want_logits_ ? &w.logits : nullptr);
  }
  // A failed rank releases the others from the collectives they wait in.
  if (!st.ok()) group_->Abort(st);
  w.result = st;
}

void Executor::WorkerLoop(int rank) {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      start_cv_.wait(lock, [&] { return stopping_ || step_generation_ != seen; });
      if (stopping_) return;
      seen = step_generation_;
    }
    RunRank(rank);
    std::lock_guard<std::mutex> lock(mu_);
    if (--pending_ == 0) done_cv_.notify_all();
  }
}

absl::Status Executor::Step(const StepBatch& batch, const StepSampling& sampling, std::vector<SampleOutput>* outputs,
                            std::vector<float>* logits) {
  RETURN_IF_ERROR(RunStep(batch, &sampling, logits != nullptr));
  *outputs = std::move(workers_[0]->samples);
  if (logits != nullptr) *logits = std::move(workers_[0]->logits);
  return absl::OkStatus();
}

absl::Status Executor::Step(const StepBatch& batch, std::vector<float>* logits) {
  RETURN_IF_ERROR(RunStep(batch, nullptr, true));
  *logits = std::move(workers_[0]->logits);
  return absl::OkStatus();
}

absl::Status Executor::RunStep(const StepBatch& batch, const StepSampling* sampling, bool want_logits) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    batch_ = &batch;
    sampling_ = sampling;
    want_logits_ = want_logits;
    pending_ = options_.tp - 1;
    ++step_generation_;
  }
  start_cv_.notify_all();
  RunRank(0);
  {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [&] { return pending_ == 0; });
    batch_ = nullptr;
    sampling_ = nullptr;
  }
  const absl::Status first = RootCause();
  if (!first.ok()) {
    if (absl::Status reset = group_->Reset(); !reset.ok()) {
      return absl::InternalError(absl::StrCat(first.message(), "; the group could not be restored: ", reset.message()));
    }
    return first;
  }
  return absl::OkStatus();
}

}  // namespace gqa
