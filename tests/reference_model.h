// An independent float64 implementation of the Llama / Mistral / Qwen2
// forward pass for tests: it parses config.json itself, converts stored
// elements itself and recomputes the whole sequence for every token (no KV
// cache, no paging, no kernels/ code). Slow and simple on purpose.
#pragma once

#include <string>
#include <vector>

#include "base/common.h"

namespace gqa::testing {

class ReferenceModel {
 public:
  // bf16_linear_inputs: every matrix product whose weights are stored as
  // bf16 first rounds its input vector to bf16 (to nearest, ties to even),
  // the numerics of engines that feed bf16 dot products (llama.cpp, the CPU
  // backend's default on AVX-512 BF16). Everything else stays float64.
  static absl::StatusOr<ReferenceModel> Load(const std::string& dir, bool bf16_linear_inputs = false);

  // Logits of the last position of `tokens`.
  std::vector<double> LastLogits(const std::vector<int>& tokens) const;
  // n greedy tokens after `prompt` (first max on ties), not stopping at EOS.
  std::vector<int> Greedy(std::vector<int> prompt, int n) const;

 private:
  using Mat = std::vector<double>;  // row-major
  struct Layer {
    Mat in_norm, post_norm, wq, wk, wv, wo, wg, wu, wd, bq, bk, bv, bo, bg, bu, bd;
  };
  int hidden_ = 0, inter_ = 0, heads_ = 0, kv_heads_ = 0, head_dim_ = 0, vocab_ = 0, window_ = 0;
  double eps_ = 0;
  bool round_layers_ = false, round_head_ = false;  // round inputs to bf16 (layer products; lm_head)
  std::vector<double> inv_freq_;
  Mat embed_, final_norm_, lm_head_;
  std::vector<Layer> layers_;
};

}  // namespace gqa::testing
