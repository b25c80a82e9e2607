#include "worker/config.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "base/json_depth.h"

namespace gqa {
namespace {

using Json = nlohmann::json;

absl::Status FieldError(absl::string_view source, absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": field '", field, "': ", what));
}

// Reads an integer field; `fallback` < 0 means required.
absl::StatusOr<int64_t> GetInt(const Json& j, absl::string_view source, const char* field,
                               int64_t fallback = -1) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) {
    if (fallback >= 0) return fallback;
    return FieldError(source, field, "missing");
  }
  if (!it->is_number_integer()) return FieldError(source, field, "must be an integer");
  return it->get<int64_t>();
}

absl::StatusOr<double> GetNumber(const Json& j, absl::string_view source, const char* field,
                                 double fallback) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) return FieldError(source, field, "must be a number");
  return it->get<double>();
}

absl::StatusOr<bool> GetBool(const Json& j, absl::string_view source, const char* field,
                             bool fallback) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) return FieldError(source, field, "must be true or false");
  return it->get<bool>();
}

absl::Status ParseRope(const Json& j, absl::string_view source, ModelConfig& c) {
  // Older configs: rope_theta + rope_scaling; newer: rope_parameters holding both.
  const Json* scaling = nullptr;
  std::string field = "rope_scaling";
  if (auto it = j.find("rope_parameters"); it != j.end() && it->is_object()) {
    scaling = &*it;
    field = "rope_parameters";
    ASSIGN_OR_RETURN(c.rope_theta, GetNumber(*it, source, "rope_theta", 10000.0));
  } else {
    ASSIGN_OR_RETURN(c.rope_theta, GetNumber(j, source, "rope_theta", 10000.0));
    if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null()) {
      if (!it->is_object()) return FieldError(source, "rope_scaling", "must be an object or null");
      scaling = &*it;
    }
  }
  if (c.rope_theta <= 0) return FieldError(source, "rope_theta", "must be positive");
  if (scaling == nullptr) return absl::OkStatus();
  std::string type = "default";
  for (const char* key : {"rope_type", "type"}) {
    if (auto it = scaling->find(key); it != scaling->end() && it->is_string()) {
      type = it->get<std::string>();
      break;
    }
  }
  const std::string where = field + ".rope_type";
  if (type == "default") return absl::OkStatus();
  if (type == "linear") {
    c.rope_scaling = RopeScaling::kLinear;
  } else if (type == "llama3") {
    c.rope_scaling = RopeScaling::kLlama3;
    ASSIGN_OR_RETURN(c.rope_low_freq_factor, GetNumber(*scaling, source, "low_freq_factor", 1.0));
    ASSIGN_OR_RETURN(c.rope_high_freq_factor, GetNumber(*scaling, source, "high_freq_factor", 4.0));
    ASSIGN_OR_RETURN(int64_t orig, GetInt(*scaling, source, "original_max_position_embeddings"));
    if (orig <= 0) return FieldError(source, "original_max_position_embeddings", "must be positive");
    c.rope_original_max_position = static_cast<int>(orig);
    if (c.rope_high_freq_factor <= c.rope_low_freq_factor) {
      return FieldError(source, "high_freq_factor", "must exceed low_freq_factor");
    }
  } else {
    return FieldError(source, where,
                      absl::StrCat("'", type, "' is not supported (supported: default, linear, llama3)"));
  }
  ASSIGN_OR_RETURN(c.rope_factor, GetNumber(*scaling, source, "factor", -1.0));
  if (c.rope_factor <= 0) return FieldError(source, field + ".factor", "missing or not positive");
  return absl::OkStatus();
}

absl::Status ParseTokenIds(const Json& j, absl::string_view source, ModelConfig& c) {
  ASSIGN_OR_RETURN(int64_t bos, GetInt(j, source, "bos_token_id", 0));
  c.bos_token_id = j.contains("bos_token_id") && !j["bos_token_id"].is_null() ? int(bos) : -1;
  auto it = j.find("eos_token_id");
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (it->is_number_integer()) {
    c.eos_token_ids.push_back(it->get<int>());
  } else if (it->is_array()) {
    for (const Json& e : *it) {
      if (!e.is_number_integer()) return FieldError(source, "eos_token_id", "list must hold integers");
      c.eos_token_ids.push_back(e.get<int>());
    }
  } else {
    return FieldError(source, "eos_token_id", "must be an integer or a list of integers");
  }
  for (int id : c.eos_token_ids) {
    if (id < 0 || id >= c.vocab_size) return FieldError(source, "eos_token_id", "outside the vocabulary");
  }
  if (c.bos_token_id >= c.vocab_size) return FieldError(source, "bos_token_id", "outside the vocabulary");
  return absl::OkStatus();
}

// Sizes derived from the config must stay far from int64 overflow: every
// one is computed with checks at the widest element (4 bytes) and the
// largest KV block (1024 tokens), and must stay below 2^50 bytes (1 PiB),
// which leaves room for block counts and ranks multiplied in later.
absl::Status CheckDerivedSizes(const ModelConfig& c, absl::string_view source) {
  constexpr int64_t kLimit = int64_t{1} << 50;
  struct Product {
    const char* field;  // the field named in the message
    const char* what;
    std::vector<int64_t> factors;
  };
  const int64_t h = c.hidden_size, hd = c.head_dim;
  const std::vector<Product> products = {
      {"num_key_value_heads", "KV cache bytes per block (2 x num_hidden_layers x num_key_value_heads x head_dim x 4 x 1024)",
       {2, c.num_layers, c.num_kv_heads, hd, 4, 1024}},
      {"num_attention_heads", "query projection bytes per layer (num_attention_heads x head_dim x hidden_size x 4)",
       {c.num_q_heads, hd, h, 4}},
      {"intermediate_size", "MLP bytes per layer (3 x intermediate_size x hidden_size x 4)", {3, c.intermediate_size, h, 4}},
      {"vocab_size", "embedding and LM head bytes (2 x vocab_size x hidden_size x 4)", {2, c.vocab_size, h, 4}},
  };
  int64_t values[4] = {};
  for (size_t i = 0; i < products.size(); ++i) {
    int64_t v = 1;
    for (int64_t f : products[i].factors) {
      if (__builtin_mul_overflow(v, f, &v) || v >= kLimit) {
        return FieldError(source, products[i].field, absl::StrCat(products[i].what, " exceeds 2^50"));
      }
    }
    values[i] = v;
  }
  // All layers: q, k, v, o projections and the MLP, times num_hidden_layers.
  int64_t layer = 0, all = 0;
  const int64_t kv = values[0] / (2 * int64_t{c.num_layers} * 1024);  // K or V projection bytes / hidden_size
  if (__builtin_mul_overflow(kv, 2 * h, &layer) || __builtin_add_overflow(layer, 2 * values[1], &layer) ||
      __builtin_add_overflow(layer, values[2], &layer) || __builtin_mul_overflow(layer, int64_t{c.num_layers}, &all) ||
      __builtin_add_overflow(all, values[3], &all) || all >= kLimit) {
    return FieldError(source, "num_hidden_layers",
                      "weight bytes of all layers (num_hidden_layers x bytes per layer) exceed 2^50");
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ParseModelConfigJson(absl::string_view json_text, absl::string_view source);

}  // namespace

absl::string_view ArchitectureName(Architecture a) {
  switch (a) {
    case Architecture::kLlama: return "LlamaForCausalLM";
    case Architecture::kMistral: return "MistralForCausalLM";
    case Architecture::kQwen2: return "Qwen2ForCausalLM";
  }
  return "?";
}

absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text, absl::string_view source) {
  // The parser recurses once per level.
  if (JsonDeeperThan(std::string_view(json_text.data(), json_text.size()))) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": nested deeper than ", kMaxJsonDepth, " levels"));
  }
  try {
    return ParseModelConfigJson(json_text, source);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", e.what()));
  }
}

namespace {
absl::StatusOr<ModelConfig> ParseModelConfigJson(absl::string_view json_text, absl::string_view source) {
  Json j = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  }
  ModelConfig c;
  auto arch_it = j.find("architectures");
  if (arch_it == j.end() || !arch_it->is_array() || arch_it->empty() || !(*arch_it)[0].is_string()) {
    return FieldError(source, "architectures", "missing or not a list of names");
  }
  const std::string arch = (*arch_it)[0].get<std::string>();
  if (arch == "LlamaForCausalLM") {
    c.arch = Architecture::kLlama;
  } else if (arch == "MistralForCausalLM") {
    c.arch = Architecture::kMistral;
  } else if (arch == "Qwen2ForCausalLM") {
    c.arch = Architecture::kQwen2;
  } else {
    return FieldError(source, "architectures",
                      absl::StrCat("'", arch, "' is not supported (supported: LlamaForCausalLM, "
                                   "MistralForCausalLM, Qwen2ForCausalLM)"));
  }
  if (auto it = j.find("hidden_act"); it != j.end() && it->is_string() && it->get<std::string>() != "silu") {
    return FieldError(source, "hidden_act", absl::StrCat("'", it->get<std::string>(), "' is not supported (only silu)"));
  }

  struct IntField { const char* name; int* dst; };
  for (IntField f : {IntField{"hidden_size", &c.hidden_size},
                     IntField{"intermediate_size", &c.intermediate_size},
                     IntField{"num_hidden_layers", &c.num_layers},
                     IntField{"num_attention_heads", &c.num_q_heads},
                     IntField{"vocab_size", &c.vocab_size}}) {
    ASSIGN_OR_RETURN(int64_t v, GetInt(j, source, f.name));
    if (v <= 0 || v > (int64_t{1} << 30)) return FieldError(source, f.name, "must be a positive integer");
    *f.dst = static_cast<int>(v);
  }
  ASSIGN_OR_RETURN(int64_t kv, GetInt(j, source, "num_key_value_heads", c.num_q_heads));
  if (kv <= 0 || c.num_q_heads % kv != 0) {
    return FieldError(source, "num_key_value_heads",
                      absl::StrCat(kv, " must be positive and divide num_attention_heads (", c.num_q_heads, ")"));
  }
  c.num_kv_heads = static_cast<int>(kv);
  ASSIGN_OR_RETURN(int64_t hd, GetInt(j, source, "head_dim", 0));
  if (hd == 0) {
    if (c.hidden_size % c.num_q_heads != 0) {
      return FieldError(source, "head_dim", "missing and hidden_size is not a multiple of num_attention_heads");
    }
    hd = c.hidden_size / c.num_q_heads;
  }
  if (hd <= 0 || hd % 2 != 0 || hd > 1024) return FieldError(source, "head_dim", "must be even, in 2..1024");
  c.head_dim = static_cast<int>(hd);
  ASSIGN_OR_RETURN(int64_t maxpos, GetInt(j, source, "max_position_embeddings", 2048));
  if (maxpos <= 0 || maxpos > (int64_t{1} << 30)) return FieldError(source, "max_position_embeddings", "must be positive");
  c.max_position_embeddings = static_cast<int>(maxpos);
  ASSIGN_OR_RETURN(double eps, GetNumber(j, source, "rms_norm_eps", 1e-6));
  if (!(eps > 0)) return FieldError(source, "rms_norm_eps", "must be positive");
  c.rms_norm_eps = static_cast<float>(eps);
  ASSIGN_OR_RETURN(c.tie_word_embeddings, GetBool(j, source, "tie_word_embeddings", false));
  // The checkpoint's own dtype: transformers writes "dtype" (older versions
  // "torch_dtype"); only a hint (--kv-cache-dtype auto), never checked
  // against the tensors.
  for (const char* key : {"dtype", "torch_dtype"}) {
    if (auto it = j.find(key); it != j.end() && it->is_string()) {
      c.dtype = it->get<std::string>();
      break;
    }
  }
  RETURN_IF_ERROR(ParseRope(j, source, c));

  if (c.arch == Architecture::kQwen2) {
    c.attention_bias = true;  // Qwen2 always has q/k/v biases, never an o_proj bias
  } else {
    ASSIGN_OR_RETURN(bool ab, GetBool(j, source, "attention_bias", false));
    c.attention_bias = c.o_proj_bias = ab;
    ASSIGN_OR_RETURN(c.mlp_bias, GetBool(j, source, "mlp_bias", false));
  }

  // Sliding-window attention: Mistral applies a non-null sliding_window;
  // Qwen2 only when use_sliding_window is true; Llama has none.
  if (c.arch != Architecture::kLlama) {
    bool use = true;
    if (c.arch == Architecture::kQwen2) {
      ASSIGN_OR_RETURN(use, GetBool(j, source, "use_sliding_window", false));
    }
    if (use) {
      ASSIGN_OR_RETURN(int64_t window, GetInt(j, source, "sliding_window", 0));
      if (window < 0) return FieldError(source, "sliding_window", "must be positive or null");
      c.sliding_window = window >= c.max_position_embeddings ? 0 : static_cast<int>(window);
      if (c.arch == Architecture::kQwen2 && c.sliding_window > 0) {
        // Qwen2 windows only the layers from max_window_layers on; not implemented.
        return FieldError(source, "use_sliding_window",
                          "Qwen2 per-layer sliding windows are not supported");
      }
    }
  }
  RETURN_IF_ERROR(ParseTokenIds(j, source, c));
  RETURN_IF_ERROR(CheckDerivedSizes(c, source));
  return c;
}
}  // namespace

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseModelConfig(ss.str(), path);
}

std::vector<float> RopeInverseFrequencies(const ModelConfig& c) {
  const int half = c.head_dim / 2;
  std::vector<float> inv(half);
  for (int i = 0; i < half; ++i) {
    // Hugging Face: 1 / base ** (arange(0, dim, 2, int64).float() / dim), in f32.
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(c.head_dim);
    inv[i] = 1.0f / std::pow(static_cast<float>(c.rope_theta), exponent);
  }
  if (c.rope_scaling == RopeScaling::kLinear) {
    for (float& f : inv) f = f / static_cast<float>(c.rope_factor);
  } else if (c.rope_scaling == RopeScaling::kLlama3) {
    const double old_len = c.rope_original_max_position;
    const double low_wavelen = old_len / c.rope_low_freq_factor;
    const double high_wavelen = old_len / c.rope_high_freq_factor;
    for (float& f : inv) {
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen > low_wavelen) {
        f = static_cast<float>(f / c.rope_factor);
      } else if (wavelen >= high_wavelen) {
        const double smooth = (old_len / wavelen - c.rope_low_freq_factor) /
                              (c.rope_high_freq_factor - c.rope_low_freq_factor);
        f = static_cast<float>((1.0 - smooth) * f / c.rope_factor + smooth * f);
      }
    }
  }
  return inv;
}

}  // namespace gqa
