#include "apps/engine_flags.h"

#include <cstdio>

namespace gqa {

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
  f.AddBool("enable-prefix-caching", "reuse the KV blocks of prompt prefixes that earlier requests computed "
            "(automatic prefix caching; the default)");
  f.AddBool("no-enable-prefix-caching", "compute every prompt from its first token");
  f.Add("rank-timeout", "3", "under mpirun: seconds without a heartbeat after which a rank counts as failed and "
        "the job ends (rank 0 fails the requests in flight and exits non-zero)");
}

absl::StatusOr<EngineBuildOptions> EngineBuildOptionsFromFlags(const Flags& f) {
  EngineBuildOptions o;
  if (!f.Has("model")) return absl::InvalidArgumentError("--model DIR is required");
  o.model_dir = f.Get("model");
  ExecutorOptions& eo = o.executor;
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
  o.tp_given = f.Has("tp");
  ASSIGN_OR_RETURN(int64_t threads, f.GetInt("threads"));
  ASSIGN_OR_RETURN(int64_t block_size, f.GetInt("block-size"));
  ASSIGN_OR_RETURN(o.num_kv_blocks, f.GetInt("num-kv-blocks"));
  ASSIGN_OR_RETURN(o.kv_cache_memory, f.GetInt("kv-cache-memory"));
  if (tp < 1 || tp > 64) return absl::InvalidArgumentError("--tp must be in 1..64");
  if (block_size < 1 || block_size > 1024) return absl::InvalidArgumentError("--block-size must be in 1..1024");
  if (o.num_kv_blocks < 0 || o.kv_cache_memory < 0) {
    return absl::InvalidArgumentError("--num-kv-blocks and --kv-cache-memory must be >= 0");
  }
  o.kv_cache_dtype = f.Get("kv-cache-dtype");  // checked by BuildEngine
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
  ASSIGN_OR_RETURN(int64_t max_seqs, f.GetInt("max-num-seqs"));
  ASSIGN_OR_RETURN(int64_t max_tokens, f.GetInt("max-num-batched-tokens"));
  ASSIGN_OR_RETURN(int64_t max_len, f.GetInt("max-model-len"));
  if (max_seqs < 1 || max_tokens < 1 || max_len < 0) {
    return absl::InvalidArgumentError("--max-num-seqs and --max-num-batched-tokens must be >= 1, --max-model-len >= 0");
  }
  o.engine.max_num_seqs = static_cast<int>(max_seqs);
  o.engine.max_num_batched_tokens = static_cast<int>(max_tokens);
  o.engine.max_model_len = static_cast<int>(std::min<int64_t>(max_len, int64_t{1} << 30));
  if (f.Has("seed")) {
    ASSIGN_OR_RETURN(int64_t seed, f.GetInt("seed"));
    o.seed = static_cast<uint64_t>(seed);
  }
  ASSIGN_OR_RETURN(o.rank_timeout_s, f.GetDouble("rank-timeout"));
  if (f.GetBool("enable-prefix-caching") && f.GetBool("no-enable-prefix-caching")) {
    return absl::InvalidArgumentError("give --enable-prefix-caching or --no-enable-prefix-caching, not both");
  }
  o.engine.enable_prefix_caching = !f.GetBool("no-enable-prefix-caching");
  return o;
}

absl::StatusOr<std::unique_ptr<Engine>> EngineFromFlags(const Flags& f, MpiJob* mpi) {
  ASSIGN_OR_RETURN(EngineBuildOptions o, EngineBuildOptionsFromFlags(f));
  return BuildEngine(o, mpi);
}

int ServeMpiRankFromFlags(const Flags& f, MpiJob* mpi) {
  absl::StatusOr<EngineBuildOptions> o = EngineBuildOptionsFromFlags(f);
  if (!o.ok()) {
    std::fprintf(stderr, "gqa: rank %d: %s\n", mpi->rank(), std::string(o.status().message()).c_str());
    std::fflush(stderr);
    std::_Exit(1);  // a failed job is not finalised
  }
  return ServeMpiRank(*o, mpi);
}

}  // namespace gqa
