#include "engine/engine_builder.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "worker/memory_plan.h"

namespace gqa {
namespace {

// MemAvailable from /proc/meminfo, or 0 when unknown.
int64_t AvailableMemoryBytes() {
  std::ifstream in("/proc/meminfo");
  std::string key, unit;
  int64_t kb = 0;
  while (in >> key >> kb >> unit) {
    if (key == "MemAvailable:") return kb * 1024;
  }
  return 0;
}

// Resident memory of this process (VmRSS), or 0 when unknown.
int64_t ResidentBytes() {
  std::ifstream in("/proc/self/status");
  std::string key, unit;
  int64_t kb = 0;
  for (std::string line; std::getline(in, line);) {
    std::istringstream ls(line);
    if (ls >> key >> kb >> unit && key == "VmRSS:") return kb * 1024;
  }
  return 0;
}

// Prints a line every few seconds while a model loads, so that a large one
// does not look hung: time so far and resident memory against the
// checkpoint's size.
class LoadProgress {
 public:
  explicit LoadProgress(const std::string& dir) : start_(std::chrono::steady_clock::now()) {
    int files = 0;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
      if (e.path().extension() == ".safetensors") {
        ++files;
        checkpoint_bytes_ += static_cast<int64_t>(e.file_size(ec));
      }
    }
    std::fprintf(stderr, "gqa: loading %s: %d safetensors file(s), %.2f GiB\n", dir.c_str(), files,
                 checkpoint_bytes_ / double(1 << 30));
    thread_ = std::thread([this] {
      std::unique_lock<std::mutex> lock(mu_);
      while (!cv_.wait_for(lock, std::chrono::seconds(5), [this] { return done_; })) {
        std::fprintf(stderr,
                     "gqa: loading: %.0f s, %lld tensors (%.2f GiB) taken by the ranks, %.2f GiB resident "
                     "(checkpoint %.2f GiB)\n",
                     Elapsed(), static_cast<long long>(counter_.tensors.load()), counter_.bytes.load() / double(1 << 30),
                     ResidentBytes() / double(1 << 30), checkpoint_bytes_ / double(1 << 30));
      }
    });
  }
  ~LoadProgress() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  double Elapsed() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }
  double checkpoint_gib() const { return checkpoint_bytes_ / double(1 << 30); }
  WeightLoadCounter* counter() { return &counter_; }

 private:
  std::chrono::steady_clock::time_point start_;
  int64_t checkpoint_bytes_ = 0;
  WeightLoadCounter counter_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

struct Built {
  std::unique_ptr<Executor> executor;
  EngineOptions engine;
  ModelConfig config;
  ShardPlan plan;
  int64_t blocks = 0, block_size = 0, block_bytes = 0;
  std::string kv_dtype;
};

absl::StatusOr<Built> BuildExecutor(const EngineBuildOptions& bo, MpiJob* mpi) {
  if (bo.model_dir.empty()) return absl::InvalidArgumentError("--model DIR is required");
  const std::string& dir = bo.model_dir;
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig((std::filesystem::path(dir) / "config.json").string()));
  ExecutorOptions eo = bo.executor;
  eo.mpi = mpi;
  if (mpi != nullptr && !bo.tp_given) eo.tp = mpi->size();
  std::string kv_dtype = bo.kv_cache_dtype;
  if (kv_dtype == "auto") kv_dtype = config.dtype == "bfloat16" ? "bf16" : "f32";
  if (kv_dtype != "f32" && kv_dtype != "bf16") {
    return absl::InvalidArgumentError("--kv-cache-dtype must be auto, f32 or bf16");
  }
  eo.kv_dtype = kv_dtype == "bf16" ? DType::kBF16 : DType::kF32;
  const int64_t block_size = eo.block_size;
  int64_t blocks = bo.num_kv_blocks, budget = bo.kv_cache_memory;

  ASSIGN_OR_RETURN(ShardPlan plan, MakeShardPlan(config.num_q_heads, config.num_kv_heads, eo.tp,
                                                 config.intermediate_size, config.vocab_size));
  // Bytes of one block summed over ranks (they share host memory here).
  const int64_t block_bytes =
      KvBytesPerToken(config, plan.KvHeadsHeld(), int(DTypeSize(eo.kv_dtype))) * block_size;
  if (blocks == 0) {
    if (budget == 0) {
      const int64_t avail = AvailableMemoryBytes();
      budget = std::min<int64_t>(int64_t{4} << 30, avail > 0 ? avail / 5 : int64_t{1} << 30);
    }
    blocks = budget / block_bytes;
    if (blocks < 1) {
      return absl::InvalidArgumentError(absl::StrCat("--kv-cache-memory ", budget, " bytes holds no block of ",
                                                     block_bytes, " bytes"));
    }
  }
  EngineOptions o = bo.engine;
  eo.max_step_tokens = o.max_num_batched_tokens;
  eo.max_step_seqs = o.max_num_seqs;
  int64_t max_len = o.max_model_len;
  if (max_len == 0 || max_len > config.max_position_embeddings) max_len = config.max_position_embeddings;
  o.max_model_len = static_cast<int>(max_len);
  // A budget-sized cache never needs more than every sequence at full length.
  if (bo.num_kv_blocks == 0) {
    blocks = std::min<int64_t>(blocks, int64_t{o.max_num_seqs} * ((max_len + block_size - 1) / block_size));
  }
  if (blocks > (int64_t{1} << 30) / block_size) return absl::InvalidArgumentError("too many KV blocks");
  // Each process may see different free memory: rank 0's figure holds.
#if defined(GQA_WITH_MPI)
  if (mpi != nullptr) RETURN_IF_ERROR(mpi->BroadcastInt64(&blocks));
#endif
  eo.num_kv_blocks = static_cast<int>(blocks);
  o.seed = bo.seed.has_value() ? *bo.seed : std::random_device()();

  Built r;
  {
    LoadProgress progress(dir);
    eo.load_counter = progress.counter();
    ASSIGN_OR_RETURN(r.executor, Executor::Open(dir, eo));
    std::fprintf(stderr, "gqa: loaded %.2f GiB of weights in %.1f s (%lld tensors taken by %s)\n",
                 progress.checkpoint_gib(), progress.Elapsed(),
                 static_cast<long long>(progress.counter()->tensors.load()),
                 mpi != nullptr ? absl::StrCat("rank ", mpi->rank(), " of ", mpi->size(), " (MPI)").c_str()
                                : absl::StrCat(eo.tp, " rank(s)").c_str());
  }
  std::fprintf(stderr, "gqa: backend %s\n", r.executor->BackendName().c_str());
  if (eo.mlock) {
    std::fprintf(stderr, "gqa: weights locked in memory: %.2f GiB (--mlock)\n",
                 double(r.executor->LockedWeightBytes()) / (1 << 30));
  } else {
    std::fprintf(stderr, "gqa: weights not locked in memory: idle pages may be evicted and re-read (--mlock)\n");
  }
  r.engine = o;
  r.config = config;
  r.plan = plan;
  r.blocks = blocks;
  r.block_size = block_size;
  r.block_bytes = block_bytes;
  r.kv_dtype = kv_dtype;
  return r;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> BuildEngine(const EngineBuildOptions& options, MpiJob* mpi) {
  ASSIGN_OR_RETURN(Built r, BuildExecutor(options, mpi));
  const ModelConfig& config = r.config;
  const ShardPlan& plan = r.plan;
  const EngineOptions& o = r.engine;
  const int64_t blocks = r.blocks, block_size = r.block_size, block_bytes = r.block_bytes;
  const std::string& kv_dtype = r.kv_dtype;
  const int tp = r.executor->tp();
  auto engine = std::make_unique<Engine>(std::move(r.executor), o);
  const int64_t tokens = blocks * block_size;
  const int64_t len = engine->max_model_len();
  std::fprintf(stderr,
               "gqa: %s, %d query / %d KV heads, tp=%d (kv_replication_factor %g), %s\n"
               "gqa: KV cache: %lld blocks of %lld tokens (%s) = %lld tokens, %.1f MiB; %lld sequences of "
               "max_model_len %lld fit; prefix caching %s; sampling seed %llu\n",
               std::string(ArchitectureName(config.arch)).c_str(), config.num_q_heads, config.num_kv_heads, tp,
               plan.KvReplicationFactor(), engine->executor().BackendName().c_str(), static_cast<long long>(blocks),
               static_cast<long long>(block_size), kv_dtype.c_str(), static_cast<long long>(tokens),
               double(blocks * block_bytes) / (1 << 20), static_cast<long long>(blocks / ((len + block_size - 1) / block_size)),
               static_cast<long long>(len), o.enable_prefix_caching ? "on" : "off",
               static_cast<unsigned long long>(o.seed));
  return engine;
}

int ServeMpiRank(const EngineBuildOptions& options, MpiJob* mpi) {
#if !defined(GQA_WITH_MPI)
  (void)options;
  (void)mpi;
  return 1;  // no MpiJob exists in a build without MPI
#else
  absl::StatusOr<Built> r = BuildExecutor(options, mpi);
  if (!r.ok()) {
    std::fprintf(stderr, "gqa: rank %d: %s\n", mpi->rank(), std::string(r.status().message()).c_str());
    std::fflush(stderr);
    std::_Exit(1);  // a failed job is not finalised
  }
  mpi->StartWatch(kHeartbeatSeconds, options.rank_timeout_s, [mpi](const absl::Status& why) {
    std::fprintf(stderr, "gqa: rank %d: the job failed: %s\n", mpi->rank(), std::string(why.message()).c_str());
  });
  const absl::Status st = r->executor->ServeSteps();
  if (!st.ok()) {
    std::fprintf(stderr, "gqa: rank %d: %s\n", mpi->rank(), std::string(st.message()).c_str());
    std::fflush(stderr);
    std::_Exit(1);
  }
  return 0;
#endif
}

}  // namespace gqa
