// The model hyper-parameters read from a Hugging Face config.json.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/common.h"

namespace gqa {

enum class Architecture { kLlama, kMistral, kQwen2 };
absl::string_view ArchitectureName(Architecture a);  // the Hugging Face class name

enum class RopeScaling { kNone, kLinear, kLlama3 };

struct ModelConfig {
  Architecture arch = Architecture::kLlama;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_q_heads = 0;   // num_attention_heads
  int num_kv_heads = 0;  // num_key_value_heads (defaults to num_q_heads: MHA)
  int head_dim = 0;      // defaults to hidden_size / num_q_heads
  int vocab_size = 0;
  int max_position_embeddings = 0;
  float rms_norm_eps = 1e-6f;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling = RopeScaling::kNone;
  double rope_factor = 1.0;  // linear and llama3
  double rope_low_freq_factor = 1.0;            // llama3
  double rope_high_freq_factor = 4.0;           // llama3
  int rope_original_max_position = 8192;        // llama3
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v biases (Qwen2 always; Llama when set)
  bool o_proj_bias = false;     // o_proj bias (Llama attention_bias)
  bool mlp_bias = false;        // gate/up/down biases (Llama mlp_bias)
  int sliding_window = 0;       // 0: full attention
  int bos_token_id = -1;        // -1: none
  std::vector<int> eos_token_ids;
  std::string dtype;            // config.json's dtype (or torch_dtype), e.g. "bfloat16"; "" when absent

  int group_size() const { return num_q_heads / num_kv_heads; }
  // KV-cache bytes per token across all layers at the given element size.
  int64_t KvBytesPerToken(int element_bytes) const {
    return int64_t{2} * num_layers * num_kv_heads * head_dim * element_bytes;
  }
};

// Parses and validates config.json text. Unsupported settings are refused
// with a message naming the field. `source` names the file in messages.
absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text, absl::string_view source);
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path);

// The rotary inverse frequencies [head_dim / 2], including rope scaling,
// computed as Hugging Face does (f32 results of the same formulas).
std::vector<float> RopeInverseFrequencies(const ModelConfig& c);

}  // namespace gqa
