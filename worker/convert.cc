#include "worker/convert.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/dtype.h"
#include "nlohmann/json.hpp"
#include "worker/synthetic_model.h"
#include "worker/config.h"
#include "worker/safetensors.h"

namespace gqa {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

size_t ElementSize(const std::string& dtype_name) {
  if (dtype_name == "F64") return 8;
  if (dtype_name == "F32") return 4;
  if (dtype_name == "F16" || dtype_name == "BF16") return 2;
  return 0;
}

double LoadElement(const std::string& dt, const uint8_t* p, int64_t i) {
  if (dt == "F64") {
    double v;
    std::memcpy(&v, p + 8 * i, 8);
    return v;
  }
  if (dt == "F32") {
    float v;
    std::memcpy(&v, p + 4 * i, 4);
    return v;
  }
  uint16_t h;
  std::memcpy(&h, p + 2 * i, 2);
  return dt == "BF16" ? gqa::Bf16ToFloat(h) : gqa::F16ToFloat(h);
}

void StoreElement(const std::string& dt, double v, uint8_t* p, int64_t i) {
  if (dt == "F64") {
    std::memcpy(p + 8 * i, &v, 8);
    return;
  }
  const float f = static_cast<float>(v);
  if (dt == "F32") {
    std::memcpy(p + 4 * i, &f, 4);
    return;
  }
  const uint16_t h = dt == "BF16" ? gqa::FloatToBf16(f) : gqa::FloatToF16(f);
  std::memcpy(p + 2 * i, &h, 2);
}


// Uniform in (0, 1].
double Uniform(uint64_t& state) { return (double(SplitMix64(state) >> 11) + 1.0) * (1.0 / 9007199254740992.0); }

bool IsKvTensor(const std::string& name) {
  return absl::StartsWith(name, "model.layers.") &&
         (absl::StrContains(name, ".self_attn.k_proj.") || absl::StrContains(name, ".self_attn.v_proj.")) &&
         (absl::EndsWith(name, ".weight") || absl::EndsWith(name, ".bias"));
}

absl::StatusOr<std::string> ReadText(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(p.string(), ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::Status WriteText(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat(p.string(), ": write failed"));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<KvConversion> ParseKvConversion(const std::string& name) {
  if (name == "mean") return KvConversion::kMean;
  if (name == "first") return KvConversion::kFirst;
  if (name == "random") return KvConversion::kRandom;
  return absl::InvalidArgumentError(absl::StrCat("--method must be mean, first or random, not '", name, "'"));
}

std::vector<int> ValidKvHeadChoices(int kv_heads) {
  std::vector<int> out;
  for (int g = 1; g <= kv_heads; ++g) {
    if (kv_heads % g == 0) out.push_back(g);
  }
  return out;
}

absl::StatusOr<std::vector<uint8_t>> ConvertKvTensor(const std::string& name, const std::string& dtype_name,
                                                     const std::vector<int64_t>& shape, const void* data,
                                                     int kv_heads, int head_dim, int g, KvConversion method,
                                                     uint64_t seed) {
  const size_t esize = ElementSize(dtype_name);
  if (esize == 0) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": dtype ", dtype_name, " is not F32, F16, BF16 or F64"));
  }
  if (shape.empty() || shape[0] != int64_t{kv_heads} * head_dim) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": shape ", ShapeString(shape), " does not start with ",
                                                   kv_heads, " heads x ", head_dim));
  }
  if (g <= 0 || kv_heads % g != 0) return absl::InvalidArgumentError(absl::StrCat(g, " does not divide ", kv_heads));
  int64_t per_head = head_dim;  // elements of one head's slice
  for (size_t d = 1; d < shape.size(); ++d) per_head *= shape[d];
  const int n = kv_heads / g;  // old heads per new head
  const auto* in = static_cast<const uint8_t*>(data);
  std::vector<uint8_t> out(size_t(g) * per_head * esize);
  switch (method) {
    case KvConversion::kMean:
      for (int h = 0; h < g; ++h) {
        for (int64_t i = 0; i < per_head; ++i) {
          double sum = 0;
          for (int j = 0; j < n; ++j) sum += LoadElement(dtype_name, in, (int64_t(h) * n + j) * per_head + i);
          StoreElement(dtype_name, sum / n, out.data(), h * per_head + i);
        }
      }
      break;
    case KvConversion::kFirst:
      for (int h = 0; h < g; ++h) {
        std::memcpy(out.data() + size_t(h) * per_head * esize, in + size_t(h) * n * per_head * esize,
                    per_head * esize);
      }
      break;
    case KvConversion::kRandom: {
      // Normal with the original tensor's mean and standard deviation.
      const int64_t total = int64_t(kv_heads) * per_head;
      double sum = 0, sq = 0;
      for (int64_t i = 0; i < total; ++i) {
        const double v = LoadElement(dtype_name, in, i);
        sum += v;
        sq += v * v;
      }
      const double mean = sum / total;
      const double stddev = std::sqrt(std::max(0.0, sq / total - mean * mean));
      uint64_t state = seed ^ NameHash(name);
      for (int64_t i = 0; i < int64_t(g) * per_head; ++i) {
        const double z = std::sqrt(-2.0 * std::log(Uniform(state))) * std::cos(2.0 * M_PI * Uniform(state));
        StoreElement(dtype_name, mean + stddev * z, out.data(), i);
      }
      break;
    }
  }
  return out;
}

absl::StatusOr<ConvertReport> ConvertCheckpoint(const ConvertOptions& o) {
  const fs::path in(o.in_dir), out(o.out_dir);
  if (o.in_dir.empty() || o.out_dir.empty()) return absl::InvalidArgumentError("--in and --out are required");
  std::error_code ec;
  if (fs::exists(out) && fs::equivalent(in, out, ec)) {
    return absl::InvalidArgumentError("--out must not be the input directory");
  }
  ASSIGN_OR_RETURN(std::string config_text, ReadText(in / "config.json"));
  ASSIGN_OR_RETURN(ModelConfig c, ParseModelConfig(config_text, (in / "config.json").string()));
  const std::vector<int> choices = ValidKvHeadChoices(c.num_kv_heads);
  if (std::find(choices.begin(), choices.end(), o.kv_heads) == choices.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--kv-heads ", o.kv_heads, " does not divide the model's ", c.num_kv_heads, " key/value heads (",
        c.num_q_heads, " query heads); choose one of ", absl::StrJoin(choices, ", ")));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt, Checkpoint::OpenDirectory(o.in_dir));

  ConvertReport r;
  r.q_heads = c.num_q_heads;
  r.kv_heads_before = c.num_kv_heads;
  r.kv_heads_after = o.kv_heads;
  // Output tensors grouped by the file that held them (the shard layout is kept).
  std::map<std::string, std::vector<const TensorInfo*>> by_file;
  for (const auto& [name, t] : ckpt->tensors()) by_file[t->file].push_back(t);
  fs::create_directories(out, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(o.out_dir, ": ", ec.message()));
  int kv_weights = 0;
  for (const auto& [file, tensors] : by_file) {
    std::vector<TensorToWrite> write;
    for (const TensorInfo* t : tensors) {
      TensorToWrite w;
      w.name = t->name;
      w.dtype_name = t->dtype_name;
      w.shape = t->shape;
      if (IsKvTensor(t->name)) {
        ASSIGN_OR_RETURN(w.bytes, ConvertKvTensor(t->name, t->dtype_name, t->shape, t->data, c.num_kv_heads,
                                                  c.head_dim, o.kv_heads, o.method, o.seed));
        w.shape[0] = int64_t{o.kv_heads} * c.head_dim;
        ++r.tensors_rewritten;
        if (absl::EndsWith(t->name, ".k_proj.weight")) {
          ++kv_weights;
          r.element_bytes = static_cast<int>(ElementSize(t->dtype_name));
        }
      } else {
        const auto* p = static_cast<const uint8_t*>(t->data);
        w.bytes.assign(p, p + t->bytes);
        ++r.tensors_copied;
      }
      write.push_back(std::move(w));
    }
    RETURN_IF_ERROR(WriteSafetensors((out / fs::path(file).filename()).string(), write, {{"format", "pt"}}));
  }
  if (kv_weights != c.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("found ", kv_weights, " k_proj weights for ", c.num_layers,
                                                   " layers"));
  }

  Json config = Json::parse(config_text);
  config["num_key_value_heads"] = o.kv_heads;
  RETURN_IF_ERROR(WriteText(out / "config.json", config.dump(2) + "\n"));
  if (fs::exists(in / "model.safetensors.index.json")) {
    ASSIGN_OR_RETURN(std::string index_text, ReadText(in / "model.safetensors.index.json"));
    Json index = Json::parse(index_text, nullptr, /*allow_exceptions=*/false);
    if (index.is_discarded()) return absl::InvalidArgumentError("model.safetensors.index.json is not JSON");
    uint64_t total = 0;
    for (const auto& [file, tensors] : by_file) total += fs::file_size(out / fs::path(file).filename());
    index["metadata"]["total_size"] = total;
    RETURN_IF_ERROR(WriteText(out / "model.safetensors.index.json", index.dump(2) + "\n"));
  }
  // Everything else (tokenizer, generation config, ...) as it is.
  for (const fs::directory_entry& e : fs::directory_iterator(in)) {
    const std::string base = e.path().filename().string();
    if (base == "config.json" || base == "model.safetensors.index.json" || absl::EndsWith(base, ".safetensors")) {
      continue;
    }
    fs::copy(e.path(), out / base, fs::copy_options::recursive | fs::copy_options::overwrite_existing, ec);
    if (ec) return absl::DataLossError(absl::StrCat(e.path().string(), ": copy failed: ", ec.message()));
  }

  ModelConfig after = c;
  after.num_kv_heads = o.kv_heads;
  r.kv_bytes_per_token_before = c.KvBytesPerToken(r.element_bytes);
  r.kv_bytes_per_token_after = after.KvBytesPerToken(r.element_bytes);
  return r;
}

}  // namespace gqa
