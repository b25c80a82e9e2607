// gqa-convert: turns a multi-head (or grouped-query) checkpoint into one with
// fewer key/value heads by pooling each group's K/V projection heads.
#include <cstdio>

#include "worker/convert.h"
#include "base/flags.h"

namespace gqa {
namespace {

absl::Status Run(const Flags& f) {
  ConvertOptions o;
  o.in_dir = f.Get("in");
  o.out_dir = f.Get("out");
  if (o.in_dir.empty() || o.out_dir.empty()) return absl::InvalidArgumentError("--in DIR and --out DIR are required");
  if (!f.Has("kv-heads")) return absl::InvalidArgumentError("--kv-heads G is required");
  ASSIGN_OR_RETURN(int64_t g, f.GetInt("kv-heads"));
  if (g < 1 || g > (1 << 20)) return absl::InvalidArgumentError("--kv-heads must be positive");
  o.kv_heads = static_cast<int>(g);
  ASSIGN_OR_RETURN(o.method, ParseKvConversion(f.Get("method")));
  ASSIGN_OR_RETURN(int64_t seed, f.GetInt("seed"));
  o.seed = static_cast<uint64_t>(seed);
  ASSIGN_OR_RETURN(ConvertReport r, ConvertCheckpoint(o));
  std::printf("wrote %s: %d query heads, key/value heads %d -> %d (%s), %d K/V tensors rewritten, %d copied\n",
              o.out_dir.c_str(), r.q_heads, r.kv_heads_before, r.kv_heads_after, f.Get("method").c_str(),
              r.tensors_rewritten, r.tensors_copied);
  std::printf("KV cache per token (%d-byte elements): %lld -> %lld bytes (%.2fx smaller)\n", r.element_bytes,
              static_cast<long long>(r.kv_bytes_per_token_before), static_cast<long long>(r.kv_bytes_per_token_after),
              double(r.kv_bytes_per_token_before) / double(r.kv_bytes_per_token_after));
  return absl::OkStatus();
}

}  // namespace
}  // namespace gqa

int main(int argc, char** argv) {
  gqa::Flags f("gqa-convert",
               "Converts a Llama/Mistral/Qwen2 checkpoint to fewer key/value heads (MHA -> GQA/MQA), as in Ainslie "
               "et al. 2023; uptrain the result for best quality.");
  f.Add("in", "", "input model directory (config.json + safetensors)");
  f.Add("out", "", "output directory (created)");
  f.Add("kv-heads", "", "key/value heads G of the result; must divide the model's key/value heads");
  f.Add("method", "mean", "mean (mean-pool each group's heads), first (keep each group's first head) or random "
        "(seeded random init with the original tensor's mean and standard deviation)");
  f.Add("seed", "0", "seed of --method random");
  gqa::ParseFlagsOrExit(f, argc, argv);
  absl::Status st = gqa::Run(f);
  if (!st.ok()) {
    std::fprintf(stderr, "gqa-convert: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
