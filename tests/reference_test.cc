// The engine against the independent float64 reference (reference_model.cc)
// on checkpoints written by transformers and by gqa-make-model's generator,
// across architectures, head layouts, dtypes and options.
#include <cmath>

#include "kernels/cpu/cpu_kernels.h"
#include "tests/reference_model.h"
#include "tests/test_util.h"
#include "worker/synthetic_model.h"
#include "engine/generate.h"

namespace gqa {
namespace {

using testing::FixturePath;
using testing::ReferenceModel;

// The engine's logits after each prompt within `tol` (relative; absolute for
// values below 1) of the reference's, and the same greedy tokens. kBf16:
// both round the inputs of products over bf16 weights to bf16.
void ExpectEngineMatchesReference(const std::string& dir, const std::vector<std::vector<int>>& prompts,
                                  int new_tokens, CpuActivations activations = CpuActivations::kF32,
                                  double tol = 1e-4) {
  auto ref = ReferenceModel::Load(dir, activations == CpuActivations::kBf16);
  ASSERT_TRUE(ref.ok()) << ref.status();
  ExecutorOptions eo;
  eo.threads_per_rank = 2;
  eo.num_kv_blocks = 16;
  eo.block_size = 4;
  eo.cpu_activations = activations;
  auto ex = Executor::Open(dir, eo);
  ASSERT_TRUE(ex.ok()) << ex.status();
  for (const std::vector<int>& prompt : prompts) {
    GenerateOptions opts;
    opts.max_new_tokens = new_tokens;
    opts.stop_at_eos = false;
    auto r = GenerateOne(**ex, prompt, opts);
    ASSERT_TRUE(r.ok()) << r.status();
    const std::vector<double> logits = ref->LastLogits(prompt);
    ASSERT_EQ(logits.size(), r->prompt_last_logits.size());
    double worst = 0;
    for (size_t i = 0; i < logits.size(); ++i) {
      worst = std::max(worst, std::abs(r->prompt_last_logits[i] - logits[i]) / std::max(1.0, std::abs(logits[i])));
    }
    EXPECT_LE(worst, tol) << dir << " prompt of " << prompt.size();
    if (activations == CpuActivations::kBf16) std::printf("note: %s, prompt of %zu: logits within %.2g of the reference\n", dir.c_str(), prompt.size(), worst);
    EXPECT_EQ(r->tokens, ref->Greedy(prompt, new_tokens)) << dir << " prompt of " << prompt.size();
  }
}

// Checkpoints no project tool wrote.
TEST(ReferenceTest, TransformersCheckpoints) {
  for (const char* c : {"llama_gqa", "llama_mqa", "qwen2_bias", "llama_head_dim", "llama_tied", "llama_bf16",
                        "llama3_rope", "mistral_sliding", "llama_sharded", "llama_attn_bias"}) {
    ExpectEngineMatchesReference(FixturePath(std::string("golden/") + c), {{5}, {7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17}},
                                 10);
  }
}

// The small synthetic shape every case here starts from, and the prompts
// its cases run.
SyntheticModelSpec SmallSpec() {
  SyntheticModelSpec spec;
  spec.vocab = 97;
  spec.hidden = 48;
  spec.heads = 6;
  spec.kv_heads = 2;
  spec.intermediate = 77;
  return spec;
}
const std::vector<std::vector<int>> kSyntheticPrompts = {{3}, {4, 9, 1, 7, 30, 2, 5, 11, 13}};

// Activations rounded to bf16 (the CPU backend's default for bf16 weights
// on AVX-512 BF16) against the reference rounding the same product inputs:
// what is left is f32 against float64 arithmetic, and the occasional
// activation that lands on the other side of a bf16 rounding boundary.
TEST(ReferenceTest, Bf16ActivationsMatchARoundingReference) {
  if (cpu::ActiveIsa() != cpu::Isa::kAvx512Bf16) {
    GTEST_SKIP() << "the active ISA is " << cpu::IsaName(cpu::ActiveIsa())
                 << ": activations are rounded to bf16 on AVX-512 BF16 only";
  }
  // The rounding is visible: the two references differ by far more than
  // the tolerance below.
  const std::string golden = FixturePath("golden/llama_bf16");
  auto exact = ReferenceModel::Load(golden), rounding = ReferenceModel::Load(golden, true);
  ASSERT_TRUE(exact.ok() && rounding.ok());
  const std::vector<double> a = exact->LastLogits({7, 8, 9}), b = rounding->LastLogits({7, 8, 9});
  double apart = 0;
  for (size_t i = 0; i < a.size(); ++i) apart = std::max(apart, std::abs(a[i] - b[i]) / std::max(1.0, std::abs(a[i])));
  EXPECT_GT(apart, 1e-3);
  // Measured: within 1.6e-7 on every case here.
  ExpectEngineMatchesReference(golden, {{5}, {7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17}}, 10, CpuActivations::kBf16,
                               1e-5);
  for (Architecture arch : {Architecture::kLlama, Architecture::kQwen2}) {
    SyntheticModelSpec spec = SmallSpec();
    spec.arch = arch;
    spec.dtype = DType::kBF16;
    spec.layers = 3;
    const std::string dir = testing::TempDir("model");
    ASSERT_OK(WriteSyntheticModel(spec, dir, 1));
    ExpectEngineMatchesReference(dir, kSyntheticPrompts, 12, CpuActivations::kBf16, 1e-5);
  }
}

struct SyntheticCase {
  std::string name;
  SyntheticModelSpec spec;
  int shards = 1;
};

class SyntheticReferenceTest : public ::testing::TestWithParam<SyntheticCase> {};

TEST_P(SyntheticReferenceTest, EngineMatchesFloat64) {
  const SyntheticCase& c = GetParam();
  const std::string dir = testing::TempDir("model");
  ASSERT_OK(WriteSyntheticModel(c.spec, dir, c.shards));
  ExpectEngineMatchesReference(dir, kSyntheticPrompts, 12);
}

std::vector<SyntheticCase> Cases() {
  std::vector<SyntheticCase> out;
  auto add = [&](std::string name, auto mutate, int shards = 1) {
    SyntheticCase c;
    c.name = std::move(name);
    c.spec = SmallSpec();
    c.spec.seed = out.size() + 17;
    mutate(c.spec);
    c.shards = shards;
    out.push_back(c);
  };
  add("gqa_f32", [](SyntheticModelSpec&) {});
  add("gqa_bf16", [](SyntheticModelSpec& s) { s.dtype = DType::kBF16; });
  add("gqa_f16", [](SyntheticModelSpec& s) { s.dtype = DType::kF16; });
  add("mqa", [](SyntheticModelSpec& s) { s.kv_heads = 1; });
  add("mha", [](SyntheticModelSpec& s) { s.kv_heads = 6; });
  add("group8", [](SyntheticModelSpec& s) { s.heads = 8; s.kv_heads = 1; s.hidden = 64; });
  add("qwen2_bf16", [](SyntheticModelSpec& s) { s.arch = Architecture::kQwen2; s.dtype = DType::kBF16; });
  add("head_dim_24_of_hidden_40", [](SyntheticModelSpec& s) { s.hidden = 40; s.heads = 4; s.head_dim = 24; });
  add("tied_sharded", [](SyntheticModelSpec& s) { s.tie_embeddings = true; }, 3);
  add("mistral_window_5", [](SyntheticModelSpec& s) { s.arch = Architecture::kMistral; s.sliding_window = 5; });
  add("llama3_rope", [](SyntheticModelSpec& s) { s.rope_scaling = "llama3"; s.max_position = 64; s.rope_theta = 500000; });
  add("three_layers_odd_sizes", [](SyntheticModelSpec& s) { s.layers = 3; s.hidden = 36; s.heads = 9; s.kv_heads = 3; s.intermediate = 53; });
  return out;
}

INSTANTIATE_TEST_SUITE_P(Shapes, SyntheticReferenceTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<SyntheticCase>& info) { return info.param.name; });

}  // namespace
}  // namespace gqa
