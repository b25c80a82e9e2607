// gqa-device-check: the whole model on a device kind (cuda-sim, cuda) against
// the CPU backend: greedy tokens of every prompt at each TP degree must equal
// the CPU's at TP 1 (and the Hugging Face tokens of expected.json, where a
// golden fixture has them). Needs no GoogleTest, so it also runs on a GPU
// machine; prints one line per (model, TP) and "N passed, N failed".
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "base/flags.h"
#include "worker/executor.h"
#include "engine/generate.h"

namespace gqa {
namespace {

struct Prompts {
  std::vector<std::vector<int>> ids;
  std::vector<std::vector<int>> hf_tokens;  // empty where the model has no expected.json
};

Prompts LoadPrompts(const std::string& dir, int vocab) {
  Prompts p;
  std::ifstream in(dir + "/expected.json");
  if (in) {
    const nlohmann::json j = nlohmann::json::parse(in);
    for (const auto& x : j["prompts"]) p.ids.push_back(x.get<std::vector<int>>());
    if (j.contains("greedy_tokens")) {
      for (const auto& x : j["greedy_tokens"]) p.hf_tokens.push_back(x.get<std::vector<int>>());
    }
    return p;
  }
  // A synthetic model: two fixed prompts of odd lengths.
  std::vector<int> a, b;
  for (int i = 0; i < 7; ++i) a.push_back((i * 37 + 3) % vocab);
  for (int i = 0; i < 23; ++i) b.push_back((i * 101 + 11) % vocab);
  p.ids = {a, b};
  return p;
}

absl::StatusOr<std::vector<std::vector<int>>> Greedy(const std::string& dir, const ExecutorOptions& eo,
                                                     const Prompts& prompts, int new_tokens) {
  ASSIGN_OR_RETURN(std::unique_ptr<Executor> ex, Executor::Open(dir, eo));
  std::vector<std::vector<int>> out;
  for (const auto& prompt : prompts.ids) {
    GenerateOptions go;
    go.max_new_tokens = new_tokens;
    go.stop_at_eos = false;
    ASSIGN_OR_RETURN(GenerateResult r, GenerateOne(*ex, prompt, go));
    out.push_back(r.tokens);
  }
  return out;
}

int Run(const Flags& f) {
  std::vector<std::string> models = absl::StrSplit(f.Get("models"), ',', absl::SkipEmpty());
  absl::StatusOr<DeviceKind> device = ParseDeviceKind(f.Get("device"));
  if (!device.ok()) {
    std::fprintf(stderr, "gqa-device-check: %s\n", std::string(device.status().message()).c_str());
    return 2;
  }
  absl::StatusOr<std::vector<int>> tps = f.GetIntList("tp");
  if (!tps.ok()) {
    std::fprintf(stderr, "gqa-device-check: %s\n", std::string(tps.status().message()).c_str());
    return 2;
  }
  const int new_tokens = std::atoi(f.Get("max-new-tokens").c_str());
  const std::string kv = f.Get("kv-cache-dtype");
  int passed = 0, failed = 0, skipped = 0;
  for (const std::string& dir : models) {
    const std::string name = std::filesystem::path(dir).filename().string();
    absl::StatusOr<ModelConfig> config = LoadModelConfig(dir + "/config.json");
    if (!config.ok()) {
      std::printf("%-20s error: %s\n", name.c_str(), std::string(config.status().message()).c_str());
      ++failed;
      continue;
    }
    const Prompts prompts = LoadPrompts(dir, config->vocab_size);
    ExecutorOptions eo;
    eo.num_kv_blocks = 64;
    eo.kv_dtype = kv == "bf16" ? DType::kBF16 : DType::kF32;
    eo.threads_per_rank = 1;
    eo.max_step_seqs = 1;
    absl::StatusOr<std::vector<std::vector<int>>> want = Greedy(dir, eo, prompts, new_tokens);
    if (!want.ok()) {
      std::printf("%-20s cpu error: %s\n", name.c_str(), std::string(want.status().message()).c_str());
      ++failed;
      continue;
    }
    // The CPU's own check against Hugging Face, so a device match means
    // something (only for f32 KV: bf16 rounds the cache).
    const bool hf_matches = prompts.hf_tokens.empty() || eo.kv_dtype != DType::kF32 || prompts.hf_tokens == *want;
    for (int tp : *tps) {
      if (tp > config->num_q_heads) {
        std::printf("%-20s tp=%d skipped: %d query heads\n", name.c_str(), tp, config->num_q_heads);
        ++skipped;
        continue;
      }
      ExecutorOptions d = eo;
      d.device = *device;
      d.tp = tp;
      absl::StatusOr<std::vector<std::vector<int>>> got = Greedy(dir, d, prompts, new_tokens);
      if (!got.ok()) {
        std::printf("%-20s tp=%d %s error: %s\n", name.c_str(), tp, DeviceKindName(*device),
                    std::string(got.status().message()).c_str());
        ++failed;
        continue;
      }
      const bool same = *got == *want && hf_matches;
      std::printf("%-20s tp=%d %s %s the cpu backend%s\n", name.c_str(), tp, DeviceKindName(*device),
                  same ? "matches" : "DIFFERS FROM", prompts.hf_tokens.empty() ? "" : " and transformers");
      if (!same) {
        for (size_t i = 0; i < got->size(); ++i) {
          std::printf("  prompt %zu: %s: [%s], cpu: [%s]\n", i, DeviceKindName(*device),
                      absl::StrJoin((*got)[i], ",").c_str(), absl::StrJoin((*want)[i], ",").c_str());
        }
      }
      (same ? passed : failed)++;
    }
  }
  std::printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
  return failed > 0 ? 1 : 0;
}

}  // namespace
}  // namespace gqa

int main(int argc, char** argv) {
  gqa::Flags f("gqa-device-check",
               "Greedy tokens of whole models on --device at each --tp against the CPU backend at TP 1.");
  f.Add("models", "", "comma-separated model directories (golden fixtures add transformers' tokens)");
  f.Add("device", "cuda-sim", "device kind to check: cuda-sim or cuda");
  f.Add("tp", "1,2,4,8", "tensor-parallel degrees to run");
  f.Add("max-new-tokens", "16", "greedy tokens per prompt");
  f.Add("kv-cache-dtype", "f32", "f32 or bf16");
  gqa::ParseFlagsOrExit(f, argc, argv);
  if (!f.Has("models")) {
    std::fprintf(stderr, "gqa-device-check: --models DIR[,DIR...] is required\n");
    return 2;
  }
  return gqa::Run(f);
}
