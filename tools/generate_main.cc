// gqa-generate: prefill a prompt and decode tokens on the CPU backend.
#include <cmath>
#include <cstdio>
#include <random>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "tools/flags.h"
#include "worker/generate.h"

namespace gqa {
namespace {

absl::Status Run(const Flags& f) {
  if (!f.Has("model")) return absl::InvalidArgumentError("--model DIR is required");
  ASSIGN_OR_RETURN(int64_t tp, f.GetInt("tp"));
  ASSIGN_OR_RETURN(std::vector<int> prompt, f.GetIntList("prompt-ids"));
  if (prompt.empty()) return absl::InvalidArgumentError("--prompt-ids must list at least one token id");
  ASSIGN_OR_RETURN(int64_t max_new, f.GetInt("max-new-tokens"));
  ASSIGN_OR_RETURN(double temperature, f.GetDouble("temperature"));
  ASSIGN_OR_RETURN(int64_t seed, f.GetInt("seed"));
  ASSIGN_OR_RETURN(int64_t threads, f.GetInt("threads"));
  ASSIGN_OR_RETURN(int64_t block_size, f.GetInt("block-size"));
  const std::string output = f.Get("output");
  if (output != "json" && output != "text") return absl::InvalidArgumentError("--output must be json or text");
  if (temperature < 0 || !std::isfinite(temperature)) return absl::InvalidArgumentError("--temperature must be >= 0");
  if (max_new < 0 || max_new > (1 << 24)) return absl::InvalidArgumentError("--max-new-tokens must be >= 0");
  if (block_size <= 0 || block_size > 4096) return absl::InvalidArgumentError("--block-size must be in 1..4096");

  ExecutorOptions eo;
  eo.tp = static_cast<int>(tp);
  eo.threads_per_rank = static_cast<int>(threads);
  eo.block_size = static_cast<int>(block_size);
  eo.num_kv_blocks = static_cast<int>((int64_t(prompt.size()) + max_new + block_size - 1) / block_size);
  ASSIGN_OR_RETURN(std::unique_ptr<Executor> ex, Executor::Open(f.Get("model"), eo));
  for (int id : prompt) {
    if (id < 0 || id >= ex->config().vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("prompt token id ", id, " is outside the vocabulary [0, ",
                                                     ex->config().vocab_size, ")"));
    }
  }
  GenerateOptions opts;
  opts.max_new_tokens = static_cast<int>(max_new);
  opts.stop_at_eos = !f.GetBool("ignore-eos");

  std::mt19937_64 rng(static_cast<uint64_t>(seed));
  TokenPicker pick = [&](const float* logits, int vocab) {
    if (temperature == 0) return ArgMax(logits, vocab);
    const float mx = logits[ArgMax(logits, vocab)];
    std::vector<double> p(vocab);
    for (int i = 0; i < vocab; ++i) p[i] = std::exp((double(logits[i]) - mx) / temperature);
    std::discrete_distribution<int> dist(p.begin(), p.end());
    return dist(rng);
  };
  ASSIGN_OR_RETURN(GenerateResult r, GenerateOne(*ex, prompt, opts, pick));
  const char* reason = r.stopped_at_eos ? "stop" : "length";
  if (output == "json") {
    nlohmann::json j;
    j["token_ids"] = r.tokens;
    j["finish_reason"] = reason;
    std::printf("%s\n", j.dump().c_str());
  } else {
    for (size_t i = 0; i < r.tokens.size(); ++i) std::printf("%s%d", i ? " " : "", r.tokens[i]);
    std::printf("\n");
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace gqa

int main(int argc, char** argv) {
  gqa::Flags f("gqa-generate", "Generates tokens for one prompt with a Hugging Face model directory on the CPU.");
  f.Add("model", "", "model directory (config.json + safetensors)");
  f.Add("tp", "1", "tensor-parallel degree: simulated devices, one thread each, sharing the CPU cores");
  f.Add("prompt-ids", "", "comma-separated prompt token ids, e.g. 1,2,3");
  f.Add("max-new-tokens", "16", "tokens to generate");
  f.Add("temperature", "0", "0 for greedy decoding; > 0 samples from softmax(logits / T)");
  f.Add("seed", "0", "random seed for sampling");
  f.AddBool("ignore-eos", "keep generating after an end-of-sequence token");
  f.Add("threads", "0", "CPU threads per rank; 0 means hardware threads / tp");
  f.Add("block-size", "16", "KV cache block size in tokens");
  f.Add("output", "json", "json: one line {\"token_ids\":[...],\"finish_reason\":...}; text: ids separated by spaces");
  gqa::ParseFlagsOrExit(f, argc, argv);
  absl::Status st = gqa::Run(f);
  if (!st.ok()) {
    std::fprintf(stderr, "gqa-generate: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
