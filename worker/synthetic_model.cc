#include "worker/synthetic_model.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/dtype.h"

namespace gqa {

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t NameHash(const std::string& s) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  return h;
}
namespace {


// Values uniform in [mean - a, mean + a] with a = std * sqrt(3), stored as dtype.
TensorToWrite RandomTensor(const std::string& name, std::vector<int64_t> shape, DType dtype,
                           uint64_t seed, double mean, double stddev) {
  TensorToWrite t;
  t.name = name;
  t.dtype_name = std::string(DTypeName(dtype));
  t.shape = std::move(shape);
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  t.bytes.resize(size_t(n) * DTypeSize(dtype));
  uint64_t state = seed ^ NameHash(name);
  const double a = stddev * std::sqrt(3.0);
  for (int64_t i = 0; i < n; ++i) {
    const double u = double(SplitMix64(state) >> 11) * (1.0 / 9007199254740992.0);  // [0, 1)
    const float v = static_cast<float>(mean + (2.0 * u - 1.0) * a);
    if (dtype == DType::kF32) {
      std::memcpy(t.bytes.data() + 4 * i, &v, 4);
    } else {
      const uint16_t h = dtype == DType::kBF16 ? gqa::FloatToBf16(v) : gqa::FloatToF16(v);
      std::memcpy(t.bytes.data() + 2 * i, &h, 2);
    }
  }
  return t;
}

}  // namespace

nlohmann::json SyntheticConfigJson(const SyntheticModelSpec& s) {
  nlohmann::json j;
  j["architectures"] = {std::string(ArchitectureName(s.arch))};
  j["model_type"] = s.arch == Architecture::kQwen2 ? "qwen2" : s.arch == Architecture::kMistral ? "mistral" : "llama";
  j["hidden_size"] = s.hidden;
  j["intermediate_size"] = s.intermediate;
  j["num_hidden_layers"] = s.layers;
  j["num_attention_heads"] = s.heads;
  j["num_key_value_heads"] = s.kv_heads;
  j["head_dim"] = s.ResolvedHeadDim();
  j["vocab_size"] = s.vocab;
  j["max_position_embeddings"] = s.max_position;
  j["rms_norm_eps"] = s.rms_norm_eps;
  j["rope_theta"] = s.rope_theta;
  j["hidden_act"] = "silu";
  j["tie_word_embeddings"] = s.tie_embeddings;
  j["bos_token_id"] = s.bos_token_id;
  j["eos_token_id"] = s.eos_token_id;
  j["torch_dtype"] = s.dtype == DType::kF32 ? "float32" : s.dtype == DType::kBF16 ? "bfloat16" : "float16";
  if (s.rope_scaling == "linear") {
    j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", s.rope_factor}};
  } else if (s.rope_scaling == "llama3") {
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", s.rope_factor},
                         {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0},
                         {"original_max_position_embeddings", std::max(1, s.max_position / 8)}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  if (s.arch == Architecture::kMistral) {
    j["sliding_window"] = s.sliding_window > 0 ? nlohmann::json(s.sliding_window) : nlohmann::json(nullptr);
  }
  if (s.arch == Architecture::kQwen2) {
    j["use_sliding_window"] = false;
    j["sliding_window"] = s.max_position;
  }
  return j;
}

std::vector<TensorToWrite> SyntheticTensors(const SyntheticModelSpec& s) {
  const int64_t hd = s.ResolvedHeadDim();
  const int64_t q = s.heads * hd, kv = s.kv_heads * hd;
  const bool qkv_bias = s.arch == Architecture::kQwen2;
  std::vector<TensorToWrite> out;
  auto linear = [&](const std::string& name, int64_t rows, int64_t cols, bool bias) {
    out.push_back(RandomTensor(name + ".weight", {rows, cols}, s.dtype, s.seed, 0.0, 1.0 / std::sqrt(double(cols))));
    if (bias) out.push_back(RandomTensor(name + ".bias", {rows}, s.dtype, s.seed, 0.0, 0.1));
  };
  auto norm = [&](const std::string& name, int64_t n) {
    out.push_back(RandomTensor(name, {n}, s.dtype, s.seed, 1.0, 0.1));
  };
  out.push_back(RandomTensor("model.embed_tokens.weight", {s.vocab, s.hidden}, s.dtype, s.seed, 0.0, 1.0));
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    norm(p + "input_layernorm.weight", s.hidden);
    linear(p + "self_attn.q_proj", q, s.hidden, qkv_bias);
    linear(p + "self_attn.k_proj", kv, s.hidden, qkv_bias);
    linear(p + "self_attn.v_proj", kv, s.hidden, qkv_bias);
    linear(p + "self_attn.o_proj", s.hidden, q, false);
    norm(p + "post_attention_layernorm.weight", s.hidden);
    linear(p + "mlp.gate_proj", s.intermediate, s.hidden, false);
    linear(p + "mlp.up_proj", s.intermediate, s.hidden, false);
    linear(p + "mlp.down_proj", s.hidden, s.intermediate, false);
  }
  norm("model.norm.weight", s.hidden);
  if (!s.tie_embeddings) linear("lm_head", s.vocab, s.hidden, false);
  return out;
}

absl::Status WriteSyntheticModel(const SyntheticModelSpec& s, const std::string& dir, int shards) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(dir, ": ", ec.message()));
  {
    std::ofstream cfg(fs::path(dir) / "config.json");
    cfg << SyntheticConfigJson(s).dump(2) << "\n";
    if (!cfg) return absl::DataLossError(absl::StrCat(dir, "/config.json: write failed"));
  }
  std::vector<TensorToWrite> tensors = SyntheticTensors(s);
  const std::map<std::string, std::string> meta = {{"format", "pt"}};
  if (shards <= 1) return WriteSafetensors((fs::path(dir) / "model.safetensors").string(), tensors, meta);
  shards = std::min<int>(shards, tensors.size());
  nlohmann::json index;
  uint64_t total = 0;
  for (int i = 0; i < shards; ++i) {
    const std::string name = absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, shards);
    std::vector<TensorToWrite> part;
    for (size_t t = i; t < tensors.size(); t += shards) {
      index["weight_map"][tensors[t].name] = name;
      total += tensors[t].bytes.size();
      part.push_back(std::move(tensors[t]));
    }
    RETURN_IF_ERROR(WriteSafetensors((fs::path(dir) / name).string(), part, meta));
  }
  index["metadata"] = {{"total_size", total}};
  std::ofstream idx(fs::path(dir) / "model.safetensors.index.json");
  idx << index.dump(2) << "\n";
  if (!idx) return absl::DataLossError(absl::StrCat(dir, "/model.safetensors.index.json: write failed"));
  return absl::OkStatus();
}

std::unique_ptr<Checkpoint> SyntheticCheckpoint(const SyntheticModelSpec& s) {
  std::vector<TensorToWrite> tensors = SyntheticTensors(s);
  std::vector<TensorInfo> infos;
  std::vector<std::vector<uint8_t>> storage;
  for (TensorToWrite& t : tensors) {
    TensorInfo info;
    info.name = t.name;
    info.dtype_name = t.dtype_name;
    info.dtype = s.dtype;
    info.shape = t.shape;
    info.bytes = t.bytes.size();
    info.file = "<memory>";
    storage.push_back(std::move(t.bytes));
    info.data = storage.back().data();
    infos.push_back(std::move(info));
  }
  return Checkpoint::FromMemory(std::move(infos), std::move(storage), "<synthetic model>");
}

}  // namespace gqa
