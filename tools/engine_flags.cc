#include "tools/engine_flags.h"

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

}  // namespace

void AddEngineFlags(Flags& f) {
  f.Add("model", "", "model directory (config.json + safetensors)");
  f.Add("device", "cpu", "cpu, cuda (one GPU per rank, NCCL between them) or cuda-sim (the CUDA kernels on the "
        "SIMT interpreter: slow, for tests and debugging)");
  f.Add("tp", "1", "tensor-parallel degree: simulated devices, one thread each, sharing the CPU cores");
  f.Add("threads", "0", "CPU threads per rank; 0 means hardware threads / tp");
  f.Add("block-size", "16", "KV cache block size in tokens");
  f.Add("num-kv-blocks", "0", "KV cache blocks; 0 sizes the cache from --kv-cache-memory");
  f.Add("kv-cache-memory", "0", "bytes for the KV cache of all ranks; 0 means min(4 GiB, 20% of available memory)");
  f.Add("kv-cache-dtype", "auto", "KV cache element type: f32, bf16, or auto (bf16 for a checkpoint whose config.json "
        "says bfloat16, as transformers itself computes such a model; f32 otherwise)");
  f.Add("max-num-seqs", "256", "sequences running at once at most");
  f.Add("max-num-batched-tokens", "2048", "tokens per step at most; longer prompts are prefilled in chunks");
  f.Add("max-model-len", "0", "prompt + generated tokens at most; 0 means max_position_embeddings");
  f.Add("cuda-graphs", "on", "on or off: with --device cuda (or cuda-sim), decode steps of up to "
        "--cuda-graph-max-batch sequences run as CUDA graphs, captured once per batch-size bucket (1, 2, 4, ...) and "
        "replayed; prefill and mixed steps run kernel by kernel");
  f.Add("cuda-graph-max-batch", "256", "largest decode batch run as a CUDA graph (rounded down to a power of two, at "
        "most --max-num-seqs); larger decode steps run kernel by kernel");
  f.Add("seed", "", "seed for requests without one (default: random, printed at start-up)");
  f.AddBool("mlock", "lock the model's files in RAM at start-up (reads them in whole first), so that the kernel "
            "cannot evict idle weights; needs a locked-memory limit (ulimit -l) above the checkpoint's size or "
            "CAP_IPC_LOCK");
  f.Add("cpu-activations", "auto", "CPU backend, bf16 weights on a CPU with AVX-512 BF16: how activations enter "
        "the matrix products. bf16: rounded to one bf16, as llama.cpp does; f32: kept f32 (the weights widened for "
        "FMAs), half the prefill and batched-decode throughput, logits about 1.5e-2 (relative) closer to "
        "an f32 computation; auto: bf16. Other CPUs and dtypes compute in f32 whatever this says");
  f.Add("rank-timeout", "3", "under mpirun: seconds without a heartbeat after which a rank counts as failed and "
        "the job ends (rank 0 fails the requests in flight and exits non-zero)");
}

namespace {

struct ExecutorFromFlagsResult {
  std::unique_ptr<Executor> executor;
  EngineOptions engine;
  ModelConfig config;
  ShardPlan plan;
  int64_t blocks = 0, block_size = 0, block_bytes = 0;
  std::string kv_dtype;
};

absl::StatusOr<ExecutorFromFlagsResult> ExecutorFromFlags(const Flags& f, MpiJob* mpi) {
  if (!f.Has("model")) return absl::InvalidArgumentError("--model DIR is required");
  const std::string dir = f.Get("model");
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig((std::filesystem::path(dir) / "config.json").string()));
  ExecutorOptions eo;
  eo.mpi = mpi;
  eo.mlock = f.GetBool("mlock");
  const std::string activations = f.Get("cpu-activations");
  if (activations == "bf16") {
    eo.cpu_activations = CpuActivations::kBf16;
  } else if (activations == "f32") {
    eo.cpu_activations = CpuActivations::kF32;
  } else if (activations != "auto") {
    return absl::InvalidArgumentError("--cpu-activations must be auto, bf16 or f32");
  }
  ASSIGN_OR_RETURN(int64_t tp, f.GetInt("tp"));
  // Under mpirun the job's size is the TP degree unless --tp says otherwise
  // (then the executor refuses the mismatch).
  if (mpi != nullptr && !f.Has("tp")) tp = mpi->size();
  ASSIGN_OR_RETURN(int64_t threads, f.GetInt("threads"));
  ASSIGN_OR_RETURN(int64_t block_size, f.GetInt("block-size"));
  ASSIGN_OR_RETURN(int64_t blocks, f.GetInt("num-kv-blocks"));
  ASSIGN_OR_RETURN(int64_t budget, f.GetInt("kv-cache-memory"));
  if (tp < 1 || tp > 64) return absl::InvalidArgumentError("--tp must be in 1..64");
  if (block_size < 1 || block_size > 1024) return absl::InvalidArgumentError("--block-size must be in 1..1024");
  if (blocks < 0 || budget < 0) return absl::InvalidArgumentError("--num-kv-blocks and --kv-cache-memory must be >= 0");
  std::string kv_dtype = f.Get("kv-cache-dtype");
  if (kv_dtype == "auto") kv_dtype = config.dtype == "bfloat16" ? "bf16" : "f32";
  if (kv_dtype != "f32" && kv_dtype != "bf16") {
    return absl::InvalidArgumentError("--kv-cache-dtype must be auto, f32 or bf16");
  }
  ASSIGN_OR_RETURN(eo.device, ParseDeviceKind(f.Get("device")));
  const std::string graphs = f.Get("cuda-graphs");
  if (graphs != "on" && graphs != "off") return absl::InvalidArgumentError("--cuda-graphs must be on or off");
  eo.cuda_graphs = graphs == "on";
  ASSIGN_OR_RETURN(int64_t graph_batch, f.GetInt("cuda-graph-max-batch"));
  if (graph_batch < 1 || graph_batch > 4096) return absl::InvalidArgumentError("--cuda-graph-max-batch must be in 1..4096");
  eo.cuda_graph_max_batch = static_cast<int>(graph_batch);
  eo.tp = static_cast<int>(tp);
  eo.threads_per_rank = static_cast<int>(threads);
  eo.block_size = static_cast<int>(block_size);
  eo.kv_dtype = kv_dtype == "bf16" ? DType::kBF16 : DType::kF32;

  ASSIGN_OR_RETURN(ShardPlan plan, MakeShardPlan(config.num_q_heads, config.num_kv_heads, eo.tp,
                                                 config.intermediate_size, config.vocab_size));
  // Bytes of one block summed over ranks (they share host memory here).
  const int64_t block_bytes = int64_t{2} * config.num_layers * plan.KvHeadsHeld() * config.head_dim * block_size *
                              int64_t(DTypeSize(eo.kv_dtype));
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
  EngineOptions o;
  ASSIGN_OR_RETURN(int64_t max_seqs, f.GetInt("max-num-seqs"));
  ASSIGN_OR_RETURN(int64_t max_tokens, f.GetInt("max-num-batched-tokens"));
  ASSIGN_OR_RETURN(int64_t max_len, f.GetInt("max-model-len"));
  if (max_seqs < 1 || max_tokens < 1 || max_len < 0) {
    return absl::InvalidArgumentError("--max-num-seqs and --max-num-batched-tokens must be >= 1, --max-model-len >= 0");
  }
  o.max_num_seqs = static_cast<int>(max_seqs);
  o.max_num_batched_tokens = static_cast<int>(max_tokens);
  eo.max_step_tokens = o.max_num_batched_tokens;
  eo.max_step_seqs = o.max_num_seqs;
  if (max_len == 0 || max_len > config.max_position_embeddings) max_len = config.max_position_embeddings;
  o.max_model_len = static_cast<int>(max_len);
  // A budget-sized cache never needs more than every sequence at full length.
  if (!f.Has("num-kv-blocks") || f.Get("num-kv-blocks") == "0") {
    blocks = std::min(blocks, max_seqs * ((max_len + block_size - 1) / block_size));
  }
  if (blocks > (int64_t{1} << 30) / block_size) return absl::InvalidArgumentError("too many KV blocks");
  // Each process may see different free memory: rank 0's figure holds.
#if defined(GQA_WITH_MPI)
  if (mpi != nullptr) RETURN_IF_ERROR(mpi->BroadcastInt64(&blocks));
#endif
  eo.num_kv_blocks = static_cast<int>(blocks);
  if (f.Has("seed")) {
    ASSIGN_OR_RETURN(int64_t seed, f.GetInt("seed"));
    o.seed = static_cast<uint64_t>(seed);
  } else {
    o.seed = std::random_device()();
  }

  ExecutorFromFlagsResult r;
  {
    LoadProgress progress(dir);
    eo.load_counter = progress.counter();
    ASSIGN_OR_RETURN(r.executor, Executor::Open(dir, eo));
    eo.load_counter = nullptr;
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

absl::StatusOr<std::unique_ptr<Engine>> EngineFromFlags(const Flags& f, MpiJob* mpi) {
  ASSIGN_OR_RETURN(ExecutorFromFlagsResult r, ExecutorFromFlags(f, mpi));
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
               "max_model_len %lld fit; sampling seed %llu\n",
               std::string(ArchitectureName(config.arch)).c_str(), config.num_q_heads, config.num_kv_heads, tp,
               plan.KvReplicationFactor(), engine->executor().BackendName().c_str(), static_cast<long long>(blocks),
               static_cast<long long>(block_size), kv_dtype.c_str(), static_cast<long long>(tokens),
               double(blocks * block_bytes) / (1 << 20), static_cast<long long>(blocks / ((len + block_size - 1) / block_size)),
               static_cast<long long>(len), static_cast<unsigned long long>(o.seed));
  return engine;
}

int ServeMpiRank(const Flags& f, MpiJob* mpi) {
#if !defined(GQA_WITH_MPI)
  (void)f;
  (void)mpi;
  return 1;  // no MpiJob exists in a build without MPI
#else
  absl::StatusOr<ExecutorFromFlagsResult> r = ExecutorFromFlags(f, mpi);
  if (!r.ok()) {
    std::fprintf(stderr, "gqa: rank %d: %s\n", mpi->rank(), std::string(r.status().message()).c_str());
    std::fflush(stderr);
    std::_Exit(1);  // a failed job is not finalised
  }
  absl::StatusOr<double> timeout = f.GetDouble("rank-timeout");
  mpi->StartWatch(kHeartbeatSeconds, timeout.ok() ? *timeout : 3.0, [mpi](const absl::Status& why) {
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
