// Tensor-parallel invariance: greedy tokens at TP=T equal TP=1 for every
// head layout the issue lists; KV memory per rank equals the plan; a failing
// rank is reported, not hung on.
#include "absl/strings/str_cat.h"
#include "tests/test_util.h"
#include "worker/synthetic_model.h"
#include "engine/generate.h"

namespace gqa {
namespace {

struct TpCase {
  std::string name;
  SyntheticModelSpec spec;
  std::vector<int> tps;
};

std::vector<int> Greedy(const std::string& dir, int tp, const std::vector<int>& prompt, int n) {
  ExecutorOptions eo;
  eo.tp = tp;
  eo.threads_per_rank = 1;
  eo.num_kv_blocks = 8;
  eo.block_size = 8;
  auto ex = Executor::Open(dir, eo);
  EXPECT_TRUE(ex.ok()) << ex.status();
  if (!ex.ok()) return {};
  GenerateOptions opts;
  opts.max_new_tokens = n;
  opts.stop_at_eos = false;
  auto r = GenerateOne(**ex, prompt, opts);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->tokens : std::vector<int>{};
}

class TpInvarianceTest : public ::testing::TestWithParam<TpCase> {};

TEST_P(TpInvarianceTest, GreedyTokensEqualTp1) {
  const TpCase& c = GetParam();
  const std::string dir = testing::TempDir("model");
  ASSERT_OK(WriteSyntheticModel(c.spec, dir));
  const std::vector<int> prompt = {3, 17, 4, 40, 8, 21, 9};
  const std::vector<int> want = Greedy(dir, 1, prompt, 12);
  ASSERT_EQ(want.size(), 12u);
  for (int tp : c.tps) EXPECT_EQ(Greedy(dir, tp, prompt, 12), want) << "tp=" << tp;
}

std::vector<TpCase> Cases() {
  std::vector<TpCase> out;
  auto add = [&](std::string name, int heads, int kv, int head_dim, std::vector<int> tps, auto mutate) {
    TpCase c;
    c.name = std::move(name);
    c.spec.heads = heads;
    c.spec.kv_heads = kv;
    c.spec.head_dim = head_dim;
    c.spec.hidden = 48;
    c.spec.intermediate = 70;
    c.spec.vocab = 131;  // not divisible by most T
    c.spec.seed = 100 + out.size();
    mutate(c.spec);
    c.tps = std::move(tps);
    out.push_back(c);
  };
  auto none = [](SyntheticModelSpec&) {};
  add("mha_8_8", 8, 8, 6, {2, 3, 4, 6, 7, 8}, none);
  add("mqa_8_1", 8, 1, 6, {2, 3, 4, 6, 7, 8}, none);
  add("gqa_8_2_replicated_at_tp8", 8, 2, 6, {2, 3, 4, 6, 7, 8}, none);
  add("gqa_16_8_at_tp4_tp8", 16, 8, 4, {2, 4, 8}, none);
  add("qwen2_7b_ratio_28_4", 28, 4, 4, {2, 3, 4, 6, 7, 8}, none);
  add("gqa_8_2_bf16", 8, 2, 6, {2, 3, 4, 8}, [](SyntheticModelSpec& s) { s.dtype = DType::kBF16; });
  add("qwen2_biases", 8, 2, 6, {2, 3, 4, 8}, [](SyntheticModelSpec& s) { s.arch = Architecture::kQwen2; });
  add("tied_f16", 8, 4, 6, {2, 4, 8}, [](SyntheticModelSpec& s) {
    s.tie_embeddings = true;
    s.dtype = DType::kF16;
  });
  return out;
}

INSTANTIATE_TEST_SUITE_P(Layouts, TpInvarianceTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<TpCase>& i) { return i.param.name; });

// o_proj and down_proj biases are row-parallel: added once, not T times.
TEST(TpTest, RowParallelBiasesAddedOnce) {
  const std::string dir = testing::FixturePath("golden/llama_attn_bias");
  const std::vector<int> prompt = {12, 200, 7};
  const std::vector<int> want = Greedy(dir, 1, prompt, 10);
  for (int tp : {2, 3, 8}) EXPECT_EQ(Greedy(dir, tp, prompt, 10), want) << "tp=" << tp;
}

TEST(TpTest, KvCacheHoldsOnlyThePlansHeads) {
  SyntheticModelSpec spec;
  spec.heads = 28;
  spec.kv_heads = 4;
  spec.head_dim = 4;
  spec.hidden = 56;
  spec.layers = 3;
  const std::string dir = testing::TempDir("model");
  ASSERT_OK(WriteSyntheticModel(spec, dir));
  for (int tp : {1, 2, 3, 4, 7, 8}) {
    ExecutorOptions eo;
    eo.tp = tp;
    eo.threads_per_rank = 1;
    eo.num_kv_blocks = 5;
    eo.block_size = 16;
    auto ex = Executor::Open(dir, eo);
    ASSERT_TRUE(ex.ok()) << ex.status();
    int64_t total = 0;
    for (int r = 0; r < tp; ++r) {
      const RankShard& s = (*ex)->plan().ranks[r];
      // K and V, f32, per layer, per slot.
      const int64_t want = int64_t{2} * spec.layers * s.num_kv_heads() * spec.head_dim * 4 * 5 * 16;
      EXPECT_EQ((*ex)->KvCacheBytes(r), want) << "tp=" << tp << " rank " << r;
      total += (*ex)->KvCacheBytes(r);
    }
    const int64_t unsharded = int64_t{2} * spec.layers * spec.kv_heads * spec.head_dim * 4 * 5 * 16;
    EXPECT_EQ(double(total) / unsharded, (*ex)->plan().KvReplicationFactor()) << "tp=" << tp;
  }
}

// On the CPU and on the CUDA backend's interpreter: a failing rank fails the
// step on every rank with its own message, and the next step runs normally.
TEST(TpTest, FailingRankIsReportedAndTheGroupRecovers) {
  const std::string dir = testing::FixturePath("golden/llama_gqa");
  for (DeviceKind device : {DeviceKind::kCpu, DeviceKind::kCudaSim}) {
    ExecutorOptions eo;
    eo.device = device;
    eo.tp = 4;
    eo.threads_per_rank = 1;
    eo.num_kv_blocks = 8;
    auto ex = Executor::Open(dir, eo);
    ASSERT_TRUE(ex.ok()) << ex.status();
    GenerateOptions opts;
    opts.max_new_tokens = 4;
    opts.stop_at_eos = false;
    auto want = GenerateOne(**ex, {5, 6, 7}, opts);
    ASSERT_TRUE(want.ok());
    for (int rank : {0, 3}) {
      (*ex)->InjectFaultForTesting(rank, absl::InternalError(absl::StrCat("device ", rank, " fell over")));
      auto r = GenerateOne(**ex, {5, 6, 7}, opts);
      ASSERT_FALSE(r.ok());
      EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr(absl::StrCat("device ", rank, " fell over")))
          << DeviceKindName(device);
      // The next request runs normally.
      auto again = GenerateOne(**ex, {5, 6, 7}, opts);
      ASSERT_TRUE(again.ok()) << again.status();
      EXPECT_EQ(again->tokens, want->tokens) << DeviceKindName(device);
    }
  }
}

// A kernel that cannot run (here: attention with head_dim 512, beyond the
// CUDA kernels' 256) fails the step with the device's message; the process
// and the executor go on.
TEST(TpTest, DeviceErrorFailsTheStepNotTheProcess) {
  SyntheticModelSpec s;
  s.layers = 1;
  s.hidden = 64;
  s.heads = 2;
  s.kv_heads = 1;
  s.head_dim = 512;
  s.intermediate = 32;
  s.vocab = 64;
  s.dtype = DType::kF32;
  s.max_position = 64;
  auto config = ParseModelConfig(SyntheticConfigJson(s).dump(), "<synthetic>");
  ASSERT_TRUE(config.ok()) << config.status();
  ExecutorOptions eo;
  eo.device = DeviceKind::kCudaSim;
  eo.tp = 2;
  eo.num_kv_blocks = 4;
  auto ex = Executor::Create(*config, SyntheticCheckpoint(s), eo);
  ASSERT_TRUE(ex.ok()) << ex.status();
  GenerateOptions opts;
  opts.max_new_tokens = 2;
  for (int i = 0; i < 2; ++i) {
    auto r = GenerateOne(**ex, {1, 2, 3}, opts);
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("head_dim up to 256"));
  }
}

TEST(TpTest, InvalidTpIsRefusedWithTheNumbers) {
  ExecutorOptions eo;
  eo.tp = 9;  // llama_gqa has 8 query heads
  auto ex = Executor::Open(testing::FixturePath("golden/llama_gqa"), eo);
  ASSERT_FALSE(ex.ok());
  EXPECT_THAT(std::string(ex.status().message()),
              ::testing::AllOf(::testing::HasSubstr("H=8"), ::testing::HasSubstr("K=2"), ::testing::HasSubstr("T=9")));
}

}  // namespace
}  // namespace gqa

namespace gqa {
namespace {

// The load counter sees every tensor each rank takes: embedding, final norm,
// 9 per layer (2 norms, q/k/v/o, gate/up/down) and an untied LM head.
TEST(TpTest, LoadCounterSeesEveryTensorOfEveryRank) {
  const std::string dir = testing::FixturePath("golden/llama_gqa");
  for (int tp : {1, 2}) {
    WeightLoadCounter counter;
    ExecutorOptions eo;
    eo.tp = tp;
    eo.threads_per_rank = 1;
    eo.num_kv_blocks = 4;
    eo.load_counter = &counter;
    auto ex = Executor::Open(dir, eo);
    ASSERT_TRUE(ex.ok()) << ex.status();
    const ModelConfig& c = (*ex)->config();
    const int per_rank = 2 + 9 * c.num_layers + (c.tie_word_embeddings ? 0 : 1);
    EXPECT_EQ(counter.tensors.load(), int64_t{per_rank} * tp) << "tp=" << tp;
    int64_t weight_bytes = 0;
    for (int r = 0; r < tp; ++r) weight_bytes += (*ex)->WeightBytes(r);
    EXPECT_GT(counter.bytes.load(), weight_bytes) << "tp=" << tp;  // matrices plus norms and the embedding
  }
}

}  // namespace
}  // namespace gqa
