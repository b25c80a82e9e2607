// gqa-make-model: writes a random-weight checkpoint in the Hugging Face layout.
#include <cstdio>
#include <thread>

#include "base/flags.h"
#include "worker/synthetic_model.h"

namespace gqa {
namespace {

absl::Status Run(const Flags& f) {
  if (!f.Has("out")) return absl::InvalidArgumentError("--out DIR is required");
  SyntheticModelSpec s;
  const std::string arch = f.Get("arch");
  if (arch == "llama") {
    s.arch = Architecture::kLlama;
  } else if (arch == "mistral") {
    s.arch = Architecture::kMistral;
  } else if (arch == "qwen2") {
    s.arch = Architecture::kQwen2;
  } else {
    return absl::InvalidArgumentError("--arch must be llama, mistral or qwen2");
  }
  struct IntFlag { const char* name; int* dst; };
  for (IntFlag fl : {IntFlag{"layers", &s.layers}, IntFlag{"hidden", &s.hidden}, IntFlag{"heads", &s.heads},
                     IntFlag{"kv-heads", &s.kv_heads}, IntFlag{"head-dim", &s.head_dim},
                     IntFlag{"intermediate", &s.intermediate}, IntFlag{"vocab", &s.vocab},
                     IntFlag{"max-position", &s.max_position}, IntFlag{"sliding-window", &s.sliding_window},
                     IntFlag{"bos", &s.bos_token_id}, IntFlag{"eos", &s.eos_token_id}}) {
    ASSIGN_OR_RETURN(int64_t v, f.GetInt(fl.name));
    *fl.dst = static_cast<int>(v);
  }
  if (s.layers <= 0 || s.hidden <= 0 || s.heads <= 0 || s.kv_heads <= 0 || s.intermediate <= 0 || s.vocab <= 0) {
    return absl::InvalidArgumentError("--layers, --hidden, --heads, --kv-heads, --intermediate and --vocab must be positive");
  }
  if (s.heads % s.kv_heads != 0) return absl::InvalidArgumentError("--kv-heads must divide --heads");
  if (s.head_dim == 0 && s.hidden % s.heads != 0) return absl::InvalidArgumentError("--hidden must be a multiple of --heads unless --head-dim is given");
  if (s.ResolvedHeadDim() % 2 != 0) return absl::InvalidArgumentError("the head dimension must be even");
  const std::string dtype = f.Get("dtype");
  if (dtype == "f32") {
    s.dtype = DType::kF32;
  } else if (dtype == "f16") {
    s.dtype = DType::kF16;
  } else if (dtype == "bf16") {
    s.dtype = DType::kBF16;
  } else {
    return absl::InvalidArgumentError("--dtype must be f32, f16 or bf16");
  }
  s.tie_embeddings = f.GetBool("tie-embeddings");
  ASSIGN_OR_RETURN(int64_t seed, f.GetInt("seed"));
  s.seed = static_cast<uint64_t>(seed);
  ASSIGN_OR_RETURN(s.rope_theta, f.GetDouble("rope-theta"));
  ASSIGN_OR_RETURN(s.rope_factor, f.GetDouble("rope-factor"));
  ASSIGN_OR_RETURN(s.rms_norm_eps, f.GetDouble("rms-norm-eps"));
  s.rope_scaling = f.Get("rope-scaling");
  if (s.rope_scaling != "none" && s.rope_scaling != "linear" && s.rope_scaling != "llama3") {
    return absl::InvalidArgumentError("--rope-scaling must be none, linear or llama3");
  }
  ASSIGN_OR_RETURN(int64_t shards, f.GetInt("shards"));
  RETURN_IF_ERROR(WriteSyntheticModel(s, f.Get("out"), static_cast<int>(shards)));
  std::printf("wrote %s: %s, %d layers, hidden %d, %d query / %d KV heads of %d, %s, seed %llu\n",
              f.Get("out").c_str(), std::string(ArchitectureName(s.arch)).c_str(), s.layers, s.hidden, s.heads,
              s.kv_heads, s.ResolvedHeadDim(), dtype.c_str(), static_cast<unsigned long long>(s.seed));
  return absl::OkStatus();
}

}  // namespace
}  // namespace gqa

int main(int argc, char** argv) {
  gqa::Flags f("gqa-make-model", "Writes a random-weight checkpoint (config.json + safetensors) in the Hugging Face layout.");
  f.Add("out", "", "output directory (created)");
  f.Add("arch", "llama", "llama, mistral or qwen2 (qwen2 has q/k/v biases)");
  f.Add("layers", "2", "decoder layers");
  f.Add("hidden", "64", "hidden size");
  f.Add("heads", "8", "query heads");
  f.Add("kv-heads", "2", "key/value heads (= heads: MHA, 1: MQA)");
  f.Add("head-dim", "0", "head dimension; 0 means hidden / heads");
  f.Add("intermediate", "172", "MLP intermediate size");
  f.Add("vocab", "300", "vocabulary size");
  f.Add("dtype", "f32", "weight dtype: f32, f16 or bf16");
  f.AddBool("tie-embeddings", "share the embedding matrix with the LM head");
  f.Add("seed", "0", "random seed; the same seed writes the same weights");
  f.Add("max-position", "2048", "max_position_embeddings");
  f.Add("rope-theta", "10000", "rope_theta");
  f.Add("rope-scaling", "none", "none, linear or llama3");
  f.Add("rope-factor", "8", "rope scaling factor");
  f.Add("sliding-window", "0", "sliding window (mistral only); 0 means none");
  f.Add("rms-norm-eps", "1e-5", "rms_norm_eps");
  f.Add("bos", "1", "bos_token_id");
  f.Add("eos", "2", "eos_token_id");
  f.Add("shards", "1", "number of safetensors files (>1 writes model.safetensors.index.json)");
  gqa::ParseFlagsOrExit(f, argc, argv);
  absl::Status st = gqa::Run(f);
  if (!st.ok()) {
    std::fprintf(stderr, "gqa-make-model: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
