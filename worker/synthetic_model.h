// Random-weight checkpoints in the Hugging Face layout, deterministic for a
// seed: written to a directory (gqa-make-model, tests) or kept in memory
// (benchmarks).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "worker/config.h"
#include "worker/safetensors.h"

namespace gqa {

struct SyntheticModelSpec {
  Architecture arch = Architecture::kLlama;
  int layers = 2;
  int hidden = 64;
  int heads = 8;        // query heads
  int kv_heads = 2;
  int head_dim = 0;     // 0: hidden / heads
  int intermediate = 172;
  int vocab = 300;
  DType dtype = DType::kF32;
  bool tie_embeddings = false;
  uint64_t seed = 0;
  int max_position = 2048;
  double rope_theta = 10000.0;
  std::string rope_scaling = "none";  // none, linear, llama3
  double rope_factor = 8.0;
  int sliding_window = 0;             // Mistral only; 0: none
  double rms_norm_eps = 1e-5;
  int bos_token_id = 1;
  int eos_token_id = 2;

  int ResolvedHeadDim() const { return head_dim > 0 ? head_dim : hidden / heads; }
};

nlohmann::json SyntheticConfigJson(const SyntheticModelSpec& spec);

// Every tensor of the model, in the stored dtype. Each tensor's values
// depend only on (seed, tensor name).
std::vector<TensorToWrite> SyntheticTensors(const SyntheticModelSpec& spec);

// Writes config.json and model.safetensors (shards == 1) or shards files
// model-0000i-of-0000N.safetensors plus model.safetensors.index.json.
absl::Status WriteSyntheticModel(const SyntheticModelSpec& spec, const std::string& dir, int shards = 1);

// The same model held in memory.
std::unique_ptr<Checkpoint> SyntheticCheckpoint(const SyntheticModelSpec& spec);

// The seeded generator behind synthetic and randomly initialised weights:
// SplitMix64 steps, and a per-tensor seed from the tensor's name (FNV-1a).
uint64_t SplitMix64(uint64_t& state);
uint64_t NameHash(const std::string& s);

}  // namespace gqa
