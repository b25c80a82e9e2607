// gqa-bench (offline): decode throughput of a model shape on the CPU backend
// and its fraction of the memory-bandwidth roofline, with the bandwidth
// measured in the same run, interleaved with the timed decode steps.
#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "tools/flags.h"
#include "tools/membw.h"
#include "tools/synthetic_model.h"
#include "worker/executor.h"
#include "worker/generate.h"

namespace gqa {
namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

absl::StatusOr<std::unique_ptr<Executor>> BenchModel(const Flags& f, const ExecutorOptions& eo) {
  if (f.Has("model")) return Executor::Open(f.Get("model"), eo);
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
  std::fprintf(stderr, "building a synthetic %s model in memory...\n", dtype.c_str());
  ASSIGN_OR_RETURN(ModelConfig config, ParseModelConfig(SyntheticConfigJson(s).dump(), "<synthetic config>"));
  return Executor::Create(config, SyntheticCheckpoint(s), eo);
}

absl::Status Run(const Flags& f) {
  ASSIGN_OR_RETURN(int64_t threads, f.GetInt("threads"));
  ASSIGN_OR_RETURN(int64_t context, f.GetInt("context"));
  ASSIGN_OR_RETURN(int64_t samples, f.GetInt("samples"));
  ASSIGN_OR_RETURN(int64_t steps, f.GetInt("steps-per-sample"));
  ASSIGN_OR_RETURN(int64_t probe_mib, f.GetInt("probe-mib"));
  if (context < 1 || samples < 1 || steps < 1 || probe_mib < 1) return absl::InvalidArgumentError("sizes must be positive");
  const int block_size = 16;
  const int64_t max_len = context + samples * steps + 1;
  const int blocks = static_cast<int>((max_len + block_size - 1) / block_size);
  ExecutorOptions eo;
  eo.threads_per_rank = static_cast<int>(threads);
  eo.block_size = block_size;
  eo.num_kv_blocks = blocks;
  ASSIGN_OR_RETURN(std::unique_ptr<Executor> ex, BenchModel(f, eo));
  const ModelConfig& c = ex->config();
  if (max_len > c.max_position_embeddings) return absl::InvalidArgumentError("context + steps exceed max_position_embeddings");

  // Prefill `context` tokens, then decode one token per timed step.
  StepBatch step;
  step.max_blocks_per_seq = blocks;
  for (int i = 0; i < blocks; ++i) step.block_tables.push_back(i);
  std::vector<float> logits;
  auto run_tokens = [&](int pos0, int count, int token) -> absl::Status {
    step.token_ids.assign(count, token);
    step.positions.clear();
    step.slot_mapping.clear();
    for (int i = 0; i < count; ++i) {
      step.positions.push_back(pos0 + i);
      step.slot_mapping.push_back(pos0 + i);  // blocks are 0..n-1 in order
    }
    step.token_seq.assign(count, 0);
    step.logits_rows = {count - 1};
    return ex->Step(step, &logits);
  };
  const double t_prefill = MonotonicSeconds();
  RETURN_IF_ERROR(run_tokens(0, static_cast<int>(context), 1));
  const double prefill_s = MonotonicSeconds() - t_prefill;

  BandwidthProbe probe(ex->rank0_pool(), size_t(probe_mib) << 20);
  probe.CopyBytesPerSecond();  // first touch
  std::vector<double> copy_bw, read_bw, step_s;
  std::vector<double> step_bytes;
  int pos = static_cast<int>(context);
  const int64_t weight_bytes = ex->WeightBytes(0);
  for (int s = 0; s < samples; ++s) {
    copy_bw.push_back(probe.CopyBytesPerSecond());
    read_bw.push_back(probe.ReadBytesPerSecond());
    for (int i = 0; i < steps; ++i, ++pos) {
      const double t0 = MonotonicSeconds();
      RETURN_IF_ERROR(run_tokens(pos, 1, ArgMax(logits.data(), c.vocab_size)));
      step_s.push_back(MonotonicSeconds() - t0);
      // KV read by this step: positions 0..pos of every layer, K and V, f32.
      step_bytes.push_back(double(weight_bytes) + double(c.KvBytesPerToken(4)) * (pos + 1));
    }
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
  j["decode_steps"] = step_s.size();
  j["prefill_tokens_per_s"] = context / prefill_s;
  j["weight_bytes_per_step"] = weight_bytes;
  j["decode_tokens_per_s"] = {{"median", 1.0 / med_step}, {"best", 1.0 / best_step}};
  j["achieved_GBps"] = {{"median", med_ach / 1e9}, {"best", best_ach / 1e9}};
  j["copy_GBps"] = {{"median", med_copy / 1e9}, {"best", best_copy / 1e9}, {"samples", copy_bw}};
  j["read_GBps"] = {{"median", med_read / 1e9}, {"best", best_read / 1e9}};
  j["roofline_fraction_vs_copy"] = {{"median", med_ach / med_copy}, {"best", best_ach / best_copy}};
  j["roofline_fraction_vs_read"] = {{"median", med_ach / med_read}, {"best", best_ach / best_read}};
  std::printf("%s\n", j.dump(2).c_str());
  std::fprintf(stderr,
               "decode: %.2f tok/s median (%.2f best); achieved %.1f GB/s median; copy bandwidth %.1f GB/s median "
               "-> %.0f%% of the copy roofline (best %.0f%%), %.0f%% of the read roofline\n",
               1.0 / med_step, 1.0 / best_step, med_ach / 1e9, med_copy / 1e9, 100 * med_ach / med_copy,
               100 * best_ach / best_copy, 100 * med_ach / med_read);
  return absl::OkStatus();
}

}  // namespace
}  // namespace gqa

int main(int argc, char** argv) {
  gqa::Flags f("gqa-bench",
               "Offline decode benchmark: tokens/s and fraction of the memory-bandwidth roofline measured in the "
               "same run. Defaults: a Llama-3.2-1B-shaped model in BF16 with random weights.");
  f.Add("model", "", "benchmark this model directory instead of a synthetic shape");
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
  f.Add("samples", "8", "bandwidth probes, each followed by --steps-per-sample decode steps");
  f.Add("steps-per-sample", "4", "decode steps timed after each probe");
  f.Add("probe-mib", "512", "size of each bandwidth-probe buffer in MiB");
  gqa::ParseFlagsOrExit(f, argc, argv);
  absl::Status st = gqa::Run(f);
  if (!st.ok()) {
    std::fprintf(stderr, "gqa-bench: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
