#include "worker/executor.h"

#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "worker/step_wire.h"

namespace gqa {
namespace {
DeviceOptions DeviceOptionsOf(const ExecutorOptions& o) {
  DeviceOptions d;
  d.threads_per_rank = o.threads_per_rank;
  d.cpu_activations = o.cpu_activations;
  return d;
}
}  // namespace

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
  if (options.mlock) {
    ASSIGN_OR_RETURN(ex->locked_bytes_, ex->checkpoint_->LockInMemory());
  }
  RETURN_IF_ERROR(options.mpi != nullptr ? ex->CreateMpi() : ex->CreateThreaded());
  if (options.mlock) RETURN_IF_ERROR(ex->NarrowLockToWeights());
  return ex;
}

absl::Status Executor::CreateThreaded() {
  const int tp = options_.tp;
  ASSIGN_OR_RETURN(group_, DeviceGroup::Create(options_.device, tp, DeviceOptionsOf(options_)));
  for (int r = 0; r < tp; ++r) {
    workers_.push_back(std::make_unique<Worker>());
    workers_.back()->rank = r;
  }
  // Each rank is set up on its own thread (its device is current there), all
  // at once: NCCL's initialisation waits for every rank of the group.
  // An exception in a rank becomes its error (and releases the others); a
  // thread that cannot start fails the ranks not yet started. Every thread
  // started is joined before returning.
  std::vector<std::thread> setup;
  for (int r = 0; r < tp; ++r) {
    try {
      setup.emplace_back([this, r] { workers_[r]->result = GuardedSetUpRank(r); });
    } catch (const std::system_error& e) {
      const absl::Status st = absl::ResourceExhaustedError(absl::StrCat("cannot start a thread for rank ", r, ": ", e.what()));
      for (int q = r; q < tp; ++q) workers_[q]->result = st;
      group_->Abort(st);
      break;
    }
  }
  for (std::thread& t : setup) t.join();
  RETURN_IF_ERROR(RootCause());
  for (int r = 1; r < tp; ++r) {
    try {
      workers_[r]->thread = std::thread([this, r] { WorkerLoop(r); });
    } catch (const std::system_error& e) {
      // ~Executor stops and joins the loops already started.
      return absl::ResourceExhaustedError(absl::StrCat("cannot start a thread for rank ", r, ": ", e.what()));
    }
  }
  return absl::OkStatus();
}

#if defined(GQA_WITH_MPI)
namespace {

// Every rank learns whether all ranks succeeded at something, so that they
// fail together instead of some waiting for the others.
absl::Status AgreeAll(MpiJob* job, const absl::Status& mine, const char* what) {
  std::vector<float> ok(job->size());
  const float flag = mine.ok() ? 1.0f : 0.0f;
  RETURN_IF_ERROR(job->comm()->AllGather(&flag, 1, ok.data()));
  RETURN_IF_ERROR(mine);
  for (int r = 0; r < job->size(); ++r) {
    if (ok[r] == 0.0f) return absl::AbortedError(absl::StrCat("rank ", r, " failed ", what, " (its log says why)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Executor::CreateMpi() {
  MpiJob* job = options_.mpi;
  if (options_.tp != job->size()) {
    return absl::InvalidArgumentError(absl::StrCat("--tp ", options_.tp, " does not match the MPI job's ", job->size(),
                                                   " ranks (mpirun -np): they must agree"));
  }
  // Every rank must run the same model with the same cache and step sizes;
  // rank 0's figures are the reference.
  std::vector<int64_t> mine = {options_.tp, options_.num_kv_blocks, options_.block_size, int64_t(options_.kv_dtype),
                               options_.max_step_tokens, options_.max_step_seqs, options_.max_step_penalty_entries,
                               int64_t(options_.device), config_.num_layers, config_.hidden_size, config_.vocab_size,
                               config_.num_q_heads, config_.num_kv_heads, config_.head_dim, config_.intermediate_size,
                               int64_t(options_.cuda_graphs), options_.cuda_graph_max_batch};
  std::vector<char> bytes(mine.size() * sizeof(int64_t));
  std::memcpy(bytes.data(), mine.data(), bytes.size());
  RETURN_IF_ERROR(job->BroadcastBytes(&bytes));
  absl::Status agree;
  if (bytes.size() != mine.size() * sizeof(int64_t) || std::memcmp(bytes.data(), mine.data(), bytes.size()) != 0) {
    agree = absl::InvalidArgumentError(
        absl::StrCat("rank ", job->rank(), "'s model or engine flags differ from rank 0's: every rank must be "
                     "started with the same --model and engine flags"));
  }
  RETURN_IF_ERROR(AgreeAll(job, agree, "to match rank 0's model and flags"));

  ASSIGN_OR_RETURN(group_, CreateMpiDeviceGroup(options_.device, job, DeviceOptionsOf(options_)));
  workers_.push_back(std::make_unique<Worker>());
  workers_[0]->rank = job->rank();
  absl::Status st;
  try {
    st = SetUpRank(job->rank());
  } catch (const std::exception& e) {
    st = absl::InternalError(absl::StrCat("setting up rank ", job->rank(), ": ", e.what()));
  }
  return AgreeAll(job, st, "to load its shard");
}
#else
absl::Status Executor::CreateMpi() {
  return absl::FailedPreconditionError("this build has no MPI support (install libopenmpi-dev and rebuild)");
}
#endif

absl::Status Executor::NarrowLockToWeights() {
  if (options_.device != DeviceKind::kCpu) return absl::OkStatus();
  std::vector<std::pair<const Backend*, const MatrixView*>> views;
  bool repacked = false;
  for (const auto& w : workers_) {
    const ModelWeights& mw = w->model->weights();
    views.push_back({w->backend, &mw.embedding});
    views.push_back({w->backend, &mw.lm_head.w});
    for (const LayerWeights& l : mw.layers) {
      for (const Linear* lin : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down}) views.push_back({w->backend, &lin->w});
    }
  }
  for (const auto& [backend, v] : views) repacked |= v->layout != MatrixLayout::kRowMajor;
  if (!repacked) return absl::OkStatus();  // the locked checkpoint is what the ranks read
  // The checkpoint's pages behind repacked matrices are no longer read:
  // locking them too would hold those weights twice.
  checkpoint_->UnlockInMemory();
  locked_bytes_ = 0;
  for (const auto& [backend, v] : views) {
    const size_t bytes = backend->MatrixBytes(*v);
    RETURN_IF_ERROR(LockMemory(v->data, bytes, "weights"));
    locked_bytes_ += int64_t(bytes);
  }
  return absl::OkStatus();
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
  Worker& w = const_cast<Worker&>(Local(r));
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
  // Under mpirun the interpreter's collectives are MPI's, which a capture
  // would not record: graphs there only on GPUs (NCCL) or with one rank.
  const bool graph_collectives = options_.device == DeviceKind::kCuda || options_.mpi == nullptr || options_.tp == 1;
  if (options_.cuda_graphs && options_.device != DeviceKind::kCpu && graph_collectives) {
    w.model->EnableDecodeGraphs(options_.cuda_graph_max_batch);
  }
  const KvCacheLayout layout = w.model->CacheLayout(options_.num_kv_blocks, options_.block_size, options_.kv_dtype);
  ASSIGN_OR_RETURN(KvCache cache, KvCache::Create(w.backend, config_.num_layers, layout));
  w.cache = std::make_unique<KvCache>(std::move(cache));
  return absl::OkStatus();
}

Executor::~Executor() {
  StopMpiRanks();
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
  return int64_t{config_.num_layers} * Local(rank).cache->BytesPerLayer();
}

void Executor::InjectFaultForTesting(int rank, absl::Status error) {
  std::lock_guard<std::mutex> lock(mu_);
  const_cast<Worker&>(Local(rank)).injected_fault = std::move(error);
}

void Executor::RunRank(Worker& w) {
  absl::Status st;
  {
    std::lock_guard<std::mutex> lock(mu_);
    st = std::exchange(w.injected_fault, absl::OkStatus());
  }
  if (st.ok()) st = w.backend->MakeCurrent();
  if (st.ok()) {
    st = w.model->Forward(*batch_, *w.cache, sampling_, w.rank == 0 ? &w.samples : nullptr,
                          w.rank == 0 && want_logits_ ? &w.logits : nullptr);
  }
  // A failed rank releases the others from the collectives they wait in.
  // Under MPI a refused step (invalid, refused alike by every rank before
  // any collective) is not a failure of the job; anything else is.
  if (!st.ok() && (options_.mpi == nullptr || !absl::IsInvalidArgument(st))) group_->Abort(st);
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
    RunRank(*workers_[rank]);
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

#if defined(GQA_WITH_MPI)
absl::Status Executor::ServeSteps() {
  MpiJob* job = options_.mpi;
  if (job == nullptr || job->rank() == 0) return absl::FailedPreconditionError("ServeSteps runs on MPI ranks other than 0");
  Worker& w = *workers_[0];
  std::vector<char> bytes;
  for (;;) {
    RETURN_IF_ERROR(job->BroadcastBytes(&bytes));
    absl::StatusOr<StepMessage> m = DecodeStepMessage(std::string_view(bytes.data(), bytes.size()));
    if (!m.ok()) {
      const absl::Status st = absl::InternalError(m.status().message());
      job->Fail(st);
      return st;
    }
    if (m->kind == StepMessageKind::kStop) return absl::OkStatus();
    batch_ = &m->batch;
    sampling_ = m->has_sampling ? &m->sampling : nullptr;
    want_logits_ = m->want_logits;
    RunRank(w);
    batch_ = nullptr;
    sampling_ = nullptr;
    if (!w.result.ok() && !absl::IsInvalidArgument(w.result)) return w.result;
  }
}

absl::Status Executor::RunMpiStep(const StepBatch& batch, const StepSampling* sampling, bool want_logits) {
  MpiJob* job = options_.mpi;
  std::vector<char> bytes = EncodeStep(batch, sampling, want_logits);
  RETURN_IF_ERROR(job->BroadcastBytes(&bytes));
  batch_ = &batch;
  sampling_ = sampling;
  want_logits_ = want_logits;
  RunRank(*workers_[0]);
  batch_ = nullptr;
  sampling_ = nullptr;
  absl::Status st = workers_[0]->result;
  if (!st.ok() && !absl::IsInvalidArgument(st)) {
    // Say what failed the job first, rather than how this rank noticed.
    if (absl::Status why = job->failure(); !why.ok() && !absl::IsAborted(why)) st = why;
    return absl::UnavailableError(absl::StrCat("the tensor-parallel job failed: ", st.message()));
  }
  return st;
}

void Executor::StopMpiRanks() {
  MpiJob* job = options_.mpi;
  if (job == nullptr || job->rank() != 0 || !job->failure().ok()) return;
  std::vector<char> bytes = EncodeStop();
  (void)job->BroadcastBytes(&bytes);
}
#else
absl::Status Executor::ServeSteps() { return absl::FailedPreconditionError("this build has no MPI support"); }
absl::Status Executor::RunMpiStep(const StepBatch&, const StepSampling*, bool) {
  return absl::FailedPreconditionError("this build has no MPI support");
}
void Executor::StopMpiRanks() {}
#endif

absl::Status Executor::RunStep(const StepBatch& batch, const StepSampling* sampling, bool want_logits) {
  if (options_.mpi != nullptr) return RunMpiStep(batch, sampling, want_logits);
  {
    std::lock_guard<std::mutex> lock(mu_);
    batch_ = &batch;
    sampling_ = sampling;
    want_logits_ = want_logits;
    pending_ = options_.tp - 1;
    ++step_generation_;
  }
  start_cv_.notify_all();
  RunRank(*workers_[0]);
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
