// gqa-bench (offline): decode throughput of a model shape on the CPU backend
// and its fraction of the memory-bandwidth roofline, with the bandwidth
// measured in the same run, interleaved with the timed decode steps.
#include <algorithm>
#include <functional>
#include <thread>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "base/flags.h"
#include "kernels/cuda/sim/traffic_probe.h"
#include "bench/attention_bench.h"
#include "bench/matmul_bench.h"
#include "bench/membw.h"
#ifdef GQA_HAVE_SERVE_BENCH
#include "bench/serve_bench.h"
#endif
#include "worker/synthetic_model.h"
#include "worker/executor.h"
#include "engine/generate.h"
#include "engine/engine.h"
#include <condition_variable>
#include <mutex>

namespace gqa {
namespace {

absl::StatusOr<SyntheticModelSpec> SpecFromFlags(const Flags& f) {
  SyntheticModelSpec s;
  struct IntFlag { const char* name; int* dst; };
  for (IntFlag fl : {IntFlag{"layers", &s.layers}, IntFlag{"hidden", &s.hidden}, IntFlag{"heads", &s.heads},
                     IntFlag{"kv-heads", &s.kv_heads}, IntFlag{"head-dim", &s.head_dim},
                     IntFlag{"intermediate", &s.intermediate}, IntFlag{"vocab", &s.vocab}}) {
    ASSIGN_OR_RETURN(int64_t v, f.GetInt(fl.name));
    *fl.dst = static_cast<int>(v);
  }
  const std::string dtype = f.Get("dtype");
  s.dtype = dtype == "f32" ? DType::kF32 : dtype == "f16" ? DType::kF16 : DType::kBF16;
  if (dtype != "f32" && dtype != "f16" && dtype != "bf16") return absl::InvalidArgumentError("--dtype must be f32, f16 or bf16");
  s.tie_embeddings = !f.GetBool("untied");
  s.max_position = 131072;
  return s;
}

absl::StatusOr<std::unique_ptr<Executor>> SyntheticExecutor(const SyntheticModelSpec& s, const ExecutorOptions& eo) {
  std::fprintf(stderr, "building a synthetic %s model with %d KV heads in memory...\n",
               std::string(DTypeName(s.dtype)).c_str(), s.kv_heads);
  ASSIGN_OR_RETURN(ModelConfig config, ParseModelConfig(SyntheticConfigJson(s).dump(), "<synthetic config>"));
  return Executor::Create(config, SyntheticCheckpoint(s), eo);
}

absl::StatusOr<std::unique_ptr<Executor>> BenchModel(const Flags& f, const ExecutorOptions& eo) {
  if (f.Has("model")) return Executor::Open(f.Get("model"), eo);
  ASSIGN_OR_RETURN(SyntheticModelSpec s, SpecFromFlags(f));
  return SyntheticExecutor(s, eo);
}

// Throughput against batch size for the model shape as MHA, GQA and MQA under
// one KV-cache budget: every batch runs `batch` requests of prompt-len +
// gen-len tokens through the engine at once; batches whose sequences do not
// all fit in the KV cache are reported as such and end the variant's sweep.
absl::Status RunSweep(const Flags& f) {
  ASSIGN_OR_RETURN(SyntheticModelSpec base, SpecFromFlags(f));
  ASSIGN_OR_RETURN(int64_t threads, f.GetInt("threads"));
  ASSIGN_OR_RETURN(int64_t budget_mib, f.GetInt("kv-budget-mib"));
  ASSIGN_OR_RETURN(int64_t prompt_len, f.GetInt("prompt-len"));
  ASSIGN_OR_RETURN(int64_t gen_len, f.GetInt("gen-len"));
  ASSIGN_OR_RETURN(int64_t max_batch, f.GetInt("max-batch"));
  ASSIGN_OR_RETURN(int64_t gqa_kv, f.GetInt("gqa-kv-heads"));
  if (budget_mib < 1 || prompt_len < 1 || gen_len < 1 || max_batch < 1) return absl::InvalidArgumentError("sizes must be positive");
  const int block_size = 16;
  const int64_t blocks_per_seq = (prompt_len + gen_len - 1 + block_size - 1) / block_size;
  nlohmann::json results = nlohmann::json::array();
  struct Variant { const char* name; int kv_heads; };
  for (Variant v : {Variant{"MHA", base.heads}, Variant{"GQA", static_cast<int>(gqa_kv)}, Variant{"MQA", 1}}) {
    SyntheticModelSpec s = base;
    s.kv_heads = v.kv_heads;
    const int64_t block_bytes = int64_t{2} * s.layers * s.kv_heads * s.ResolvedHeadDim() * block_size * 4;
    ExecutorOptions eo;
    ASSIGN_OR_RETURN(eo.device, ParseDeviceKind(f.Get("device")));
    eo.threads_per_rank = static_cast<int>(threads);
    eo.block_size = block_size;
    eo.num_kv_blocks = static_cast<int>((budget_mib << 20) / block_bytes);
    if (eo.num_kv_blocks < 1) return absl::InvalidArgumentError("--kv-budget-mib holds no block");
    const int64_t capacity = eo.num_kv_blocks / blocks_per_seq;
    ASSIGN_OR_RETURN(std::unique_ptr<Executor> ex, SyntheticExecutor(s, eo));
    EngineOptions o;
    o.max_num_seqs = static_cast<int>(max_batch);
    o.max_num_batched_tokens = 8192;
    Engine engine(std::move(ex), o);
    for (int64_t batch = 1; batch <= max_batch; batch *= 2) {
      nlohmann::json row = {{"variant", v.name}, {"kv_heads", v.kv_heads}, {"batch", batch},
                            {"kv_blocks", eo.num_kv_blocks}, {"max_concurrent_sequences", capacity}};
      if (batch > capacity) {
        row["fits"] = false;
        results.push_back(row);
        std::fprintf(stderr, "%s batch %lld: KV cache full (%lld sequences fit)\n", v.name,
                     static_cast<long long>(batch), static_cast<long long>(capacity));
        break;
      }
      std::mutex mu;
      std::condition_variable cv;
      int64_t pending = batch, preempted_before = engine.Stats().preemptions;
      const double t0 = MonotonicSeconds();
      for (int64_t i = 0; i < batch; ++i) {
        GenerationRequest r;
        for (int64_t j = 0; j < prompt_len; ++j) r.prompt.push_back(int32_t((i * 131 + j * 7) % s.vocab));
        r.max_tokens = static_cast<int>(gen_len);
        r.sampling.temperature = 0;
        r.ignore_eos = true;
        RETURN_IF_ERROR(engine.Submit(r, [&](const RequestOutput& out) {
          if (!out.finished) return;
          std::lock_guard<std::mutex> lock(mu);
          if (--pending == 0) cv.notify_all();
        }).status());
      }
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return pending == 0; });
      }
      const double secs = MonotonicSeconds() - t0;
      row["fits"] = true;
      row["seconds"] = secs;
      row["output_tokens_per_s"] = double(batch * gen_len) / secs;
      row["preemptions"] = engine.Stats().preemptions - preempted_before;
      results.push_back(row);
      std::fprintf(stderr, "%s batch %lld: %.1f output tokens/s\n", v.name, static_cast<long long>(batch),
                   row["output_tokens_per_s"].get<double>());
    }
  }
  std::printf("%s\n", results.dump(2).c_str());
  return absl::OkStatus();
}

// Memory traffic of the CUDA attention kernels, counted by the SIMT
// interpreter for decode and prefill at several batch sizes, group sizes and
// context lengths: bytes read over the fewest possible (Q, K, V, O once each)
// and K/V sectors per request over a perfectly coalesced access.
absl::Status RunKernelTraffic(const Flags& f) {
  struct Row { bool prefill; int batch, group, context; };
  std::vector<Row> rows;
  for (int context : {1024, 4096}) {
    for (int batch : {1, 8, 32}) {
      for (int group : {1, 4, 8}) rows.push_back({false, batch, group, context});
    }
  }
  for (int context : {256, 1024}) {
    for (int group : {1, 4, 8}) rows.push_back({true, 1, group, context});
  }
  const bool json = f.Get("output") == "json";
  nlohmann::json out = nlohmann::json::array();
  if (!json) {
    std::printf("| kernel | batch | group | head_dim | context | splits | K/V bytes / min | total bytes / min | K/V sectors per request / ideal |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|\n");
  }
  for (const Row& r : rows) {
    cuda_sim::TrafficCase c;
    c.prefill = r.prefill;
    c.batch = r.batch;
    c.group_size = r.group;
    c.num_kv_heads = 1;
    c.head_dim = 128;
    c.context = r.context;
    c.kv_dtype = DType::kBF16;
    ASSIGN_OR_RETURN(cuda_sim::TrafficReport t, cuda_sim::MeasureAttentionTraffic(c));
    const char* kernel = r.prefill ? "prefill" : "decode";
    if (json) {
      out.push_back({{"kernel", kernel}, {"batch", r.batch}, {"group_size", r.group}, {"head_dim", c.head_dim},
                     {"context", r.context}, {"kv_bytes_ratio", t.kv_bytes_ratio()},
                     {"total_bytes_ratio", t.total_bytes_ratio()},
                     {"sectors_per_request_ratio", t.sectors_per_request_ratio()}});
    } else {
      std::printf("| %s | %d | %d | %d | %d | %d | %.3f | %.3f | %.3f |\n", kernel, r.batch, r.group, c.head_dim, r.context,
                  r.prefill ? 1 : t.max_splits, t.kv_bytes_ratio(), t.total_bytes_ratio(), t.sectors_per_request_ratio());
      std::fflush(stdout);
    }
  }
  if (json) std::printf("%s\n", out.dump(2).c_str());
  return absl::OkStatus();
}

absl::Status Run(const Flags& f) {
#ifdef GQA_HAVE_SERVE_BENCH
  if (f.Get("mode") == "serve") return RunServe(f);
  if (f.Get("mode") == "serve-sweep") return RunServeSweep(f);
#else
  if (f.Get("mode") == "serve" || f.Get("mode") == "serve-sweep") {
    return absl::UnimplementedError("this gqa-bench was built without the server front-ends (GQA_BUILD_SERVER=OFF)");
  }
#endif
  if (f.Get("mode") == "sweep") return RunSweep(f);
  if (f.Get("mode") == "kernel-traffic") return RunKernelTraffic(f);
  if (f.Get("mode") == "attention") return RunAttentionBench(f);
  if (f.Get("mode") == "matmul") return RunMatMulBench(f);
  if (f.Get("mode") != "decode") {
    return absl::InvalidArgumentError("--mode must be decode, sweep, kernel-traffic, attention, matmul, serve or serve-sweep");
  }
  ASSIGN_OR_RETURN(int64_t threads, f.GetInt("threads"));
  ASSIGN_OR_RETURN(int64_t context, f.GetInt("context"));
  ASSIGN_OR_RETURN(int64_t samples, f.GetInt("samples"));
  ASSIGN_OR_RETURN(int64_t steps, f.GetInt("steps-per-sample"));
  ASSIGN_OR_RETURN(int64_t probe_mib, f.GetInt("probe-mib"));
  ASSIGN_OR_RETURN(int64_t batch, f.GetInt("batch"));
  if (context < 1 || samples < 1 || steps < 1 || probe_mib < 1 || batch < 1 || batch > 4096) {
    return absl::InvalidArgumentError("sizes must be positive (batch at most 4096)");
  }
  const std::string kv_dtype = f.Get("kv-cache-dtype");
  if (kv_dtype != "f32" && kv_dtype != "bf16") return absl::InvalidArgumentError("--kv-cache-dtype must be f32 or bf16");
  const int block_size = 16;
  // Positions 0 .. context - 1 prefilled, then one decode step per position up to context + samples * steps - 1.
  const int64_t max_len = context + samples * steps;
  const int blocks = static_cast<int>((max_len + block_size - 1) / block_size);  // per sequence
  ExecutorOptions eo;
  ASSIGN_OR_RETURN(eo.device, ParseDeviceKind(f.Get("device")));
  eo.threads_per_rank = static_cast<int>(threads);
  eo.block_size = block_size;
  eo.num_kv_blocks = static_cast<int>(blocks * batch);
  eo.kv_dtype = kv_dtype == "bf16" ? DType::kBF16 : DType::kF32;
  eo.max_step_tokens = static_cast<int>(std::max<int64_t>({context, batch, 2048}));
  eo.max_step_seqs = static_cast<int>(batch);
  const std::string graphs = f.Get("cuda-graphs");
  if (graphs != "on" && graphs != "off") return absl::InvalidArgumentError("--cuda-graphs must be on or off");
  eo.cuda_graphs = graphs == "on";
  ASSIGN_OR_RETURN(std::unique_ptr<Executor> ex, BenchModel(f, eo));
  const ModelConfig& c = ex->config();
  if (max_len > c.max_position_embeddings) return absl::InvalidArgumentError("context + steps exceed max_position_embeddings");

  // Prefill `context` tokens of each of `batch` sequences (one step each),
  // then decode one token of every sequence per timed step. Sequence b owns
  // blocks [b * blocks, (b + 1) * blocks). Greedy on the device: only the
  // tokens come back, as in serving.
  StepSampling greedy;
  std::vector<SampleOutput> sampled;
  std::vector<int32_t> next(batch, 1);
  auto prefill = [&](int b) -> absl::Status {
    StepBatch step;
    step.max_blocks_per_seq = blocks;
    for (int i = 0; i < blocks; ++i) step.block_tables.push_back(b * blocks + i);
    for (int i = 0; i < context; ++i) {
      step.token_ids.push_back(1 + (i * 31 + b) % (c.vocab_size - 1));
      step.positions.push_back(i);
      step.slot_mapping.push_back(b * blocks * block_size + i);
    }
    step.token_seq.assign(context, 0);
    step.logits_rows = {static_cast<int32_t>(context) - 1};
    greedy.rows.assign(1, SamplingRow{});
    RETURN_IF_ERROR(ex->Step(step, greedy, &sampled));
    next[b] = sampled[0].token;
    return absl::OkStatus();
  };
  StepBatch decode;
  decode.max_blocks_per_seq = blocks;
  for (int b = 0; b < batch; ++b) {
    for (int i = 0; i < blocks; ++i) decode.block_tables.push_back(b * blocks + i);
    decode.token_seq.push_back(b);
    decode.logits_rows.push_back(b);
  }
  auto decode_step = [&](int pos) -> absl::Status {
    decode.token_ids.assign(next.begin(), next.end());
    decode.positions.assign(batch, pos);
    decode.slot_mapping.clear();
    for (int b = 0; b < batch; ++b) decode.slot_mapping.push_back(b * blocks * block_size + pos);
    greedy.rows.assign(batch, SamplingRow{});
    RETURN_IF_ERROR(ex->Step(decode, greedy, &sampled));
    for (int b = 0; b < batch; ++b) next[b] = sampled[b].token;
    return absl::OkStatus();
  };
  const double t_prefill = MonotonicSeconds();
  for (int b = 0; b < batch; ++b) RETURN_IF_ERROR(prefill(b));
  const double prefill_s = MonotonicSeconds() - t_prefill;

  // The roofline: host memory on the CPU backend; on a device, a
  // device-to-device copy through the backend (read + written bytes), which
  // then stands for the read roofline as well.
  std::function<double()> copy_probe, read_probe;
  std::unique_ptr<ThreadPool> probe_pool;
  std::unique_ptr<BandwidthProbe> host_probe;
  std::unique_ptr<DeviceGroup> probe_device;
  DeviceBuffer probe_src, probe_dst;
  if (eo.device == DeviceKind::kCpu) {
    // As many threads as one rank's pool has: the roofline of what it runs.
    const int probe_threads =
        threads > 0 ? int(threads) : std::max(1, int(std::thread::hardware_concurrency()) / ex->tp());
    probe_pool = std::make_unique<ThreadPool>(probe_threads);
    host_probe = std::make_unique<BandwidthProbe>(probe_pool.get(), size_t(probe_mib) << 20);
    copy_probe = [&] { return host_probe->CopyBytesPerSecond(); };
    read_probe = [&] { return host_probe->ReadBytesPerSecond(); };
  } else {
    // A backend of its own on the first device.
    ASSIGN_OR_RETURN(probe_device, DeviceGroup::Create(eo.device, 1, DeviceOptions{}));
    RETURN_IF_ERROR(probe_device->InitRank(0));
    Backend* b = probe_device->backend(0);
    const size_t bytes = size_t(probe_mib) << 20;
    ASSIGN_OR_RETURN(probe_src, b->Allocate(bytes));
    ASSIGN_OR_RETURN(probe_dst, b->Allocate(bytes));
    copy_probe = [&, b] {
      absl::StatusOr<double> rate = DeviceCopyBytesPerSecond(*b, probe_src, probe_dst, 4);
      return rate.ok() ? *rate : 0.0;
    };
    read_probe = copy_probe;
  }
  copy_probe();  // first touch
  std::vector<double> copy_bw, read_bw, step_s;
  std::vector<double> step_bytes;
  // Per sample: the median bandwidth its steps achieved over the bandwidth
  // its probe measured just before them (the machine's bandwidth moves).
  std::vector<double> frac_copy, frac_read;
  int pos = static_cast<int>(context);
  const int64_t weight_bytes = ex->WeightBytes(0);
  for (int s = 0; s < samples; ++s) {
    copy_bw.push_back(copy_probe());
    read_bw.push_back(read_probe());
    for (int i = 0; i < steps; ++i, ++pos) {
      const double t0 = MonotonicSeconds();
      RETURN_IF_ERROR(decode_step(pos));
      step_s.push_back(MonotonicSeconds() - t0);
      // Bytes the step must read: the weights once, and positions 0..pos of
      // every sequence's K and V in every layer.
      step_bytes.push_back(double(weight_bytes) +
                           double(c.KvBytesPerToken(int(DTypeSize(eo.kv_dtype)))) * (pos + 1) * double(batch));
    }
    std::vector<double> sample_achieved;
    for (size_t i = step_s.size() - steps; i < step_s.size(); ++i) sample_achieved.push_back(step_bytes[i] / step_s[i]);
    frac_copy.push_back(Median(sample_achieved) / copy_bw.back());
    frac_read.push_back(Median(sample_achieved) / read_bw.back());
  }
  // Per-step bandwidth achieved, then summaries.
  std::vector<double> achieved;
  for (size_t i = 0; i < step_s.size(); ++i) achieved.push_back(step_bytes[i] / step_s[i]);
  const double med_step = Median(step_s), best_step = *std::min_element(step_s.begin(), step_s.end());
  const double med_ach = Median(achieved), best_ach = *std::max_element(achieved.begin(), achieved.end());
  const double med_copy = Median(copy_bw), best_copy = *std::max_element(copy_bw.begin(), copy_bw.end());
  const double med_read = Median(read_bw), best_read = *std::max_element(read_bw.begin(), read_bw.end());

  nlohmann::json j;
  j["backend"] = ex->BackendName();
  j["model"] = {{"layers", c.num_layers}, {"hidden", c.hidden_size}, {"q_heads", c.num_q_heads},
                {"kv_heads", c.num_kv_heads}, {"head_dim", c.head_dim}, {"intermediate", c.intermediate_size},
                {"vocab", c.vocab_size}, {"dtype", f.Has("model") ? "as stored" : f.Get("dtype")}};
  j["context"] = context;
  j["batch"] = batch;
  j["kv_cache_dtype"] = kv_dtype;
  j["decode_steps"] = step_s.size();
  j["prefill_tokens_per_s"] = double(context) * double(batch) / prefill_s;
  j["weight_bytes_per_step"] = weight_bytes;
  j["decode_step_ms"] = {{"median", 1e3 * med_step}, {"best", 1e3 * best_step}};
  j["decode_tokens_per_s"] = {{"median", double(batch) / med_step}, {"best", double(batch) / best_step}};
  j["achieved_GBps"] = {{"median", med_ach / 1e9}, {"best", best_ach / 1e9}};
  j["copy_GBps"] = {{"median", med_copy / 1e9}, {"best", best_copy / 1e9}, {"samples", copy_bw}};
  j["read_GBps"] = {{"median", med_read / 1e9}, {"best", best_read / 1e9}};
  j["roofline_fraction_vs_copy"] = {{"median", med_ach / med_copy}, {"best", best_ach / best_copy}};
  j["roofline_fraction_vs_read"] = {{"median", med_ach / med_read}, {"best", best_ach / best_read}};
  j["per_sample_fraction_vs_copy"] = {{"median", Median(frac_copy)},
                                      {"best", *std::max_element(frac_copy.begin(), frac_copy.end())},
                                      {"samples", frac_copy}};
  j["per_sample_fraction_vs_read"] = {{"median", Median(frac_read)},
                                      {"best", *std::max_element(frac_read.begin(), frac_read.end())},
                                      {"samples", frac_read}};
  std::printf("%s\n", j.dump(2).c_str());
  std::fprintf(stderr,
               "decode: %.2f tok/s median (%.2f best); achieved %.1f GB/s median; copy bandwidth %.1f GB/s median "
               "-> %.0f%% of the copy roofline (best %.0f%%), %.0f%% of the read roofline; per sample: %.0f%% of "
               "copy, %.0f%% of read (medians)\n",
               double(batch) / med_step, double(batch) / best_step, med_ach / 1e9, med_copy / 1e9, 100 * med_ach / med_copy,
               100 * best_ach / best_copy, 100 * med_ach / med_read, 100 * Median(frac_copy), 100 * Median(frac_read));
  return absl::OkStatus();
}

}  // namespace
}  // namespace gqa

int main(int argc, char** argv) {
  gqa::Flags f("gqa-bench",
               "Offline decode benchmark: tokens/s and fraction of the memory-bandwidth roofline measured in the "
               "same run. Defaults: a Llama-3.2-1B-shaped model in BF16 with random weights.");
  f.Add("device", "cpu", "cpu, cuda (one GPU per rank) or cuda-sim (the CUDA kernels on the SIMT interpreter)");
  f.Add("mode", "decode",
        "decode: decode steps vs the bandwidth roofline; sweep: throughput vs batch for MHA/GQA/MQA; kernel-traffic: "
        "memory traffic of the CUDA attention kernels, counted on the SIMT interpreter; attention: the attention op alone, "
        "decode GB/s against a device copy and prefill TFLOP/s; matmul: the CPU backend's matrix product alone, GFLOP/s "
        "by token count; serve: load against a running server (closed loop "
        "--concurrency or open loop --request-rate), latency percentiles and throughput per level; serve-sweep: starts "
        "gqa-server for MHA / GQA / MQA variants under one KV budget and runs the serve levels against each. The mode "
        "may also be given as the first word: gqa-bench serve --url ...");
  f.Add("cuda-graphs", "on", "decode mode on cuda / cuda-sim: decode steps as CUDA graphs (on) or kernel by kernel (off)");
  f.Add("attn-context", "1024,4096,16384,32768", "attention: context lengths");
  f.Add("attn-batch", "1,8,64", "attention: decode batch sizes");
  f.Add("attn-groups", "1,4,8", "attention: query heads per KV head");
  f.Add("attn-max-gib", "24", "attention: skip shapes whose K/V cache exceeds this many GiB");
  f.Add("mm-rows", "8192", "matmul: weight rows (output features)");
  f.Add("mm-cols", "2048", "matmul: weight columns (input features)");
  f.Add("mm-tokens", "1,4,8,16,32,64,128,512", "matmul: token counts");
  f.Add("output", "table", "kernel-traffic: table or json");
  f.Add("model", "", "decode mode: benchmark this model directory instead of a synthetic shape");
  f.Add("layers", "16", "synthetic model: layers");
  f.Add("hidden", "2048", "synthetic model: hidden size");
  f.Add("heads", "32", "synthetic model: query heads");
  f.Add("kv-heads", "8", "synthetic model: KV heads");
  f.Add("head-dim", "128", "synthetic model: head dimension");
  f.Add("intermediate", "8192", "synthetic model: MLP size");
  f.Add("vocab", "128256", "synthetic model: vocabulary");
  f.Add("dtype", "bf16", "synthetic model: f32, f16 or bf16");
  f.AddBool("untied", "synthetic model: separate LM head (default: tied, as Llama 3.2 1B)");
  f.Add("threads", "0", "CPU threads; 0 means one per hardware thread");
  f.Add("context", "128", "prompt tokens prefilled before decoding");
  f.Add("batch", "1", "decode mode: sequences decoded together, each prefilled with --context tokens");
  f.Add("kv-cache-dtype", "f32", "decode mode: KV cache element type, f32 or bf16");
  f.Add("samples", "8", "bandwidth probes, each followed by --steps-per-sample decode steps");
  f.Add("steps-per-sample", "4", "decode steps timed after each probe");
  f.Add("probe-mib", "512", "size of each bandwidth-probe buffer in MiB");
  f.Add("kv-budget-mib", "64", "sweep: KV-cache budget (f32) shared by every variant");
  f.Add("prompt-len", "16", "sweep: prompt tokens per request");
  f.Add("gen-len", "112", "sweep: generated tokens per request");
  f.Add("max-batch", "256", "sweep: largest batch tried (powers of two)");
  f.Add("gqa-kv-heads", "8", "sweep: KV heads of the GQA variant");
#ifdef GQA_HAVE_SERVE_BENCH
  gqa::AddServeFlags(f);
#endif
  // `gqa-bench serve ...`: a leading word is the mode.
  std::vector<std::string> args(argv, argv + argc);
  if (args.size() > 1 && !args[1].empty() && args[1][0] != '-') {
    args[1] = "--mode=" + args[1];
  }
  std::vector<char*> arg_ptrs;
  for (std::string& a : args) arg_ptrs.push_back(a.data());
  gqa::ParseFlagsOrExit(f, static_cast<int>(arg_ptrs.size()), arg_ptrs.data());
  absl::Status st = gqa::Run(f);
  if (!st.ok()) {
    std::fprintf(stderr, "gqa-bench: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
