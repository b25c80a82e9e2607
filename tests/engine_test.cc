// The engine end to end on a tiny model: greedy tokens are the same alone, in
// a batch of 32, with chunked prefill and after preemption, at TP 1 and 2;
// aborts and finishes free every block; seeded sampling does not depend on
// the batch (on the CPU and on the CUDA kernels under the interpreter), and
// the device's choice is the host Sampler's on the same logits; impossible
// requests fail alone.
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <random>

#include "engine/engine.h"
#include "tests/host_sampler.h"
#include "tests/test_util.h"
#include "worker/synthetic_model.h"

namespace gqa {
namespace {

struct Result {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  FinishReason reason = FinishReason::kNone;
  int cached_tokens = 0;
  bool done = false;
};

// Collects events of many requests and waits for all to finish.
class Collector {
 public:
  OutputCallback For(size_t index) {
    std::lock_guard<std::mutex> lock(mu_);
    if (results_.size() <= index) results_.resize(index + 1);
    return [this, index](const RequestOutput& out) {
      std::lock_guard<std::mutex> lock(mu_);
      Result& r = results_[index];
      for (const SampledToken& t : out.tokens) {
        r.tokens.push_back(t.token);
        r.logprobs.push_back(t.logprob);
      }
      if (out.finished) {
        r.reason = out.reason;
        r.cached_tokens = out.cached_tokens;
        r.done = true;
        cv_.notify_all();
      }
    };
  }
  std::vector<Result> Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] {
      for (const Result& r : results_)
        if (!r.done) return false;
      return true;
    });
    return results_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Result> results_;
};

std::string ModelDir() {
  static const std::string dir = [] {
    SyntheticModelSpec s;
    s.hidden = 48;
    s.heads = 6;
    s.kv_heads = 2;
    s.intermediate = 64;
    s.vocab = 97;
    s.max_position = 256;
    s.seed = 77;
    const std::string d = testing::ProcessTempDir("gqa_engine_test_model");
    EXPECT_TRUE(WriteSyntheticModel(s, d).ok());
    return d;
  }();
  return dir;
}

std::unique_ptr<Engine> MakeEngine(int tp, int blocks, int block_size, int max_seqs, int budget,
                                   DeviceKind device = DeviceKind::kCpu, bool prefix_caching = true,
                                   const std::string& model_dir = "") {
  ExecutorOptions eo;
  eo.device = device;
  eo.tp = tp;
  eo.threads_per_rank = 1;
  eo.num_kv_blocks = blocks;
  eo.block_size = block_size;
  auto ex = Executor::Open(model_dir.empty() ? ModelDir() : model_dir, eo);
  EXPECT_TRUE(ex.ok()) << ex.status();
  EngineOptions o;
  o.max_num_seqs = max_seqs;
  o.max_num_batched_tokens = budget;
  o.enable_prefix_caching = prefix_caching;
  return std::make_unique<Engine>(std::move(*ex), o);
}

std::vector<GenerationRequest> Workload(int n, uint64_t seed) {
  std::mt19937 rng(seed);
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < n; ++i) {
    GenerationRequest r;
    const int len = 1 + rng() % 40;
    for (int j = 0; j < len; ++j) r.prompt.push_back(int32_t(rng() % 97));
    r.max_tokens = 1 + rng() % 20;
    r.sampling.temperature = 0;
    r.ignore_eos = true;
    reqs.push_back(r);
  }
  return reqs;
}

std::vector<Result> RunTogether(Engine& engine, const std::vector<GenerationRequest>& reqs) {
  Collector c;
  for (size_t i = 0; i < reqs.size(); ++i) {
    auto id = engine.Submit(reqs[i], c.For(i));
    EXPECT_TRUE(id.ok()) << id.status();
  }
  return c.Wait();
}


class EngineInvarianceTest : public ::testing::TestWithParam<int> {};

TEST_P(EngineInvarianceTest, GreedyTokensDoNotDependOnBatching) {
  const int tp = GetParam();
  const std::vector<GenerationRequest> reqs = Workload(32, 3);
  // Alone: one request at a time, no prefix cache.
  std::vector<std::vector<int32_t>> alone;
  {
    auto engine = MakeEngine(tp, 64, 4, 1, 4096, DeviceKind::kCpu, /*prefix_caching=*/false);
    for (const GenerationRequest& r : reqs) {
      const std::vector<Result> res = RunTogether(*engine, {r});
      EXPECT_EQ(res[0].reason, FinishReason::kLength);
      EXPECT_EQ(int(res[0].tokens.size()), r.max_tokens);
      alone.push_back(res[0].tokens);
    }
  }
  struct Setting {
    const char* name;
    int blocks, block_size, max_seqs, budget;
    bool expect_preemption;
  };
  for (Setting s : {Setting{"batch of 32", 512, 4, 32, 4096, false},
                    Setting{"chunked prefill", 512, 4, 32, 7, false},
                    Setting{"preemption", 24, 4, 32, 64, true}}) {
    auto engine = MakeEngine(tp, s.blocks, s.block_size, s.max_seqs, s.budget);
    const std::vector<Result> res = RunTogether(*engine, reqs);
    for (size_t i = 0; i < reqs.size(); ++i) EXPECT_EQ(res[i].tokens, alone[i]) << s.name << ", request " << i;
    const EngineStats st = engine->Stats();
    EXPECT_EQ(st.free_blocks, s.blocks) << s.name;
    if (s.expect_preemption) {
      EXPECT_GT(st.preemptions, 0) << s.name;
    } else {
      EXPECT_EQ(st.preemptions, 0) << s.name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Tp, EngineInvarianceTest, ::testing::Values(1, 2),
                         [](const ::testing::TestParamInfo<int>& i) { return "tp" + std::to_string(i.param); });

// Requests that share prefixes, as chat and agent traffic does: three
// system prompts (13, 24 and 37 tokens) each followed by 0-9 tokens of its
// own (0: the prompt is the prefix itself, whole blocks when the block size
// divides it), and some identical prompts.
std::vector<GenerationRequest> SharedPrefixWorkload(int n, uint64_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<int32_t>> prefixes;
  for (int len : {13, 24, 37}) {
    std::vector<int32_t> p;
    for (int j = 0; j < len; ++j) p.push_back(int32_t(rng() % 97));
    prefixes.push_back(p);
  }
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < n; ++i) {
    GenerationRequest r;
    if (i >= 4 && rng() % 5 == 0) {
      r = reqs[rng() % reqs.size()];  // the same prompt again
    } else {
      r.prompt = prefixes[rng() % prefixes.size()];
      const int extra = int(rng() % 10);
      for (int j = 0; j < extra; ++j) r.prompt.push_back(int32_t(rng() % 97));
    }
    r.max_tokens = 1 + int(rng() % 12);
    r.sampling.temperature = 0;
    r.ignore_eos = true;
    reqs.push_back(r);
  }
  return reqs;
}

struct PrefixCase {
  int tp;
  DeviceKind device;
};

class PrefixCacheTest : public ::testing::TestWithParam<PrefixCase> {};

// Greedy tokens with the prefix cache equal those without it (alone, one at
// a time), whether requests run one after another (every later one hits),
// batched, in prefill chunks, or under preemption and eviction; the cache is
// used (hits counted and reported per request), and every block is free at
// the end.
TEST_P(PrefixCacheTest, SameGreedyTokensWithAndWithoutTheCache) {
  const PrefixCase c = GetParam();
  const bool sim = c.device == DeviceKind::kCudaSim;
  const std::vector<GenerationRequest> reqs = SharedPrefixWorkload(sim ? 10 : 24, 5);
  std::vector<std::vector<int32_t>> want;
  std::vector<std::vector<float>> want_logprobs;
  {
    auto engine = MakeEngine(c.tp, 64, 4, 1, 4096, c.device, /*prefix_caching=*/false);
    for (const GenerationRequest& r : reqs) {
      const Result res = RunTogether(*engine, {r})[0];
      want.push_back(res.tokens);
      want_logprobs.push_back(res.logprobs);
    }
    EXPECT_EQ(engine->Stats().prefix_cache_queries, 0);
  }
  ASSERT_FALSE(want_logprobs[0].empty());
  EXPECT_LT(want_logprobs[0][0], 0.0f);  // the chosen tokens' logprobs are there to compare
  struct Setting {
    const char* name;
    int blocks, block_size, max_seqs, budget;
    bool one_at_a_time, expect_preemption;
  };
  for (Setting s : {Setting{"one at a time", 64, 4, 1, 4096, true, false},
                    Setting{"block size 8, one at a time", 32, 8, 1, 4096, true, false},
                    Setting{"batched", 256, 4, 32, 4096, false, false},
                    Setting{"chunked prefill", 256, 4, 32, 7, false, false},
                    Setting{"preemption and eviction", 20, 4, 32, 64, false, true}}) {
    if (sim && !s.one_at_a_time && s.budget != 4096) continue;  // the interpreter is slow: fewer settings
    auto engine = MakeEngine(c.tp, s.blocks, s.block_size, s.max_seqs, s.budget, c.device);
    std::vector<Result> got;
    if (s.one_at_a_time) {
      for (const GenerationRequest& r : reqs) got.push_back(RunTogether(*engine, {r})[0]);
    } else {
      got = RunTogether(*engine, reqs);
    }
    int reported = 0;
    for (size_t i = 0; i < reqs.size(); ++i) {
      EXPECT_EQ(got[i].tokens, want[i]) << s.name << ", request " << i;
      ASSERT_EQ(got[i].logprobs.size(), want_logprobs[i].size());
      for (size_t k = 0; k < want_logprobs[i].size(); ++k) {
        EXPECT_NEAR(got[i].logprobs[k], want_logprobs[i][k], 1e-4) << s.name << ", request " << i << ", token " << k;
      }
      EXPECT_LT(got[i].cached_tokens, int(reqs[i].prompt.size())) << "the last prompt token is always computed";
      EXPECT_EQ(got[i].cached_tokens % s.block_size, 0);
      reported += got[i].cached_tokens;
    }
    const EngineStats st = engine->Stats();
    EXPECT_EQ(st.free_blocks, s.blocks) << s.name << ": a block was not returned";
    EXPECT_GE(st.prefix_cache_hits, reported) << s.name;
    if (s.one_at_a_time) {
      // Every later request finds what earlier ones computed. (Requests
      // admitted together find nothing of each other: blocks join the
      // cache once computed.)
      EXPECT_GT(st.prefix_cache_hits, 0) << s.name << ": the cache was never used";
      EXPECT_EQ(st.prefix_cache_hits, reported) << s.name;
    }
    if (s.expect_preemption) EXPECT_GT(st.preemptions, 0) << s.name;
  }
}

INSTANTIATE_TEST_SUITE_P(Devices, PrefixCacheTest,
                         ::testing::Values(PrefixCase{1, DeviceKind::kCpu}, PrefixCase{2, DeviceKind::kCpu},
                                           PrefixCase{3, DeviceKind::kCpu}, PrefixCase{1, DeviceKind::kCudaSim},
                                           PrefixCase{2, DeviceKind::kCudaSim}),
                         [](const ::testing::TestParamInfo<PrefixCase>& i) {
                           return std::string(i.param.device == DeviceKind::kCpu ? "cpu" : "cuda_sim") + "_tp" +
                                  std::to_string(i.param.tp);
                         });

struct GoldenCase {
  const char* model;
  int tp;
};

class GoldenPrefixCacheTest : public ::testing::TestWithParam<GoldenCase> {};

// The golden checkpoints (transformers' logits are their reference
// elsewhere): MHA, MQA, GQA, Qwen2 biases and a sliding window of 8 tokens
// (cached blocks stay valid there: a position's K/V depend on its prefix
// only, and blocks are never dropped), at TP 1, 2, 4 and 8.
TEST_P(GoldenPrefixCacheTest, SameGreedyTokensWithAndWithoutTheCache) {
  const GoldenCase c = GetParam();
  const std::string dir = testing::FixturePath(std::string("golden/") + c.model);
  const std::vector<GenerationRequest> reqs = SharedPrefixWorkload(16, 9);
  std::vector<std::vector<int32_t>> want;
  {
    auto engine = MakeEngine(c.tp, 64, 4, 1, 4096, DeviceKind::kCpu, false, dir);
    for (const GenerationRequest& r : reqs) want.push_back(RunTogether(*engine, {r})[0].tokens);
  }
  auto one = MakeEngine(c.tp, 64, 4, 1, 4096, DeviceKind::kCpu, true, dir);
  for (size_t i = 0; i < reqs.size(); ++i) EXPECT_EQ(RunTogether(*one, {reqs[i]})[0].tokens, want[i]) << "request " << i;
  EXPECT_GT(one->Stats().prefix_cache_hits, 0);
  EXPECT_EQ(one->Stats().free_blocks, 64);
  auto tight = MakeEngine(c.tp, 20, 4, 16, 11, DeviceKind::kCpu, true, dir);  // chunks of 11, preemption
  const std::vector<Result> got = RunTogether(*tight, reqs);
  for (size_t i = 0; i < reqs.size(); ++i) EXPECT_EQ(got[i].tokens, want[i]) << "tight, request " << i;
  EXPECT_GT(tight->Stats().preemptions, 0);
  EXPECT_EQ(tight->Stats().free_blocks, 20);
}

INSTANTIATE_TEST_SUITE_P(
    Golden, GoldenPrefixCacheTest,
    ::testing::ValuesIn([] {
      std::vector<GoldenCase> v;
      for (const char* m : {"llama_gqa", "llama_mha", "llama_mqa", "qwen2_bias", "mistral_sliding"}) {
        for (int tp : {1, 2, 4, 8}) v.push_back({m, tp});
      }
      return v;
    }()),
    [](const ::testing::TestParamInfo<GoldenCase>& i) { return std::string(i.param.model) + "_tp" + std::to_string(i.param.tp); });

// A salt keeps requests apart: the same prompt under another salt (or none)
// finds nothing cached; under the same salt it does.
TEST(PrefixCacheTest, SaltsKeepCachesApart) {
  auto engine = MakeEngine(1, 64, 4, 4, 4096);
  GenerationRequest r;
  for (int i = 0; i < 21; ++i) r.prompt.push_back(int32_t(3 + i));
  r.max_tokens = 2;
  r.sampling.temperature = 0;
  r.ignore_eos = true;
  GenerationRequest a = r, b = r;
  a.cache_salt = "tenant-a";
  b.cache_salt = "tenant-b";
  EXPECT_EQ(RunTogether(*engine, {a})[0].cached_tokens, 0);
  EXPECT_EQ(RunTogether(*engine, {b})[0].cached_tokens, 0);
  EXPECT_EQ(RunTogether(*engine, {r})[0].cached_tokens, 0);
  EXPECT_EQ(RunTogether(*engine, {a})[0].cached_tokens, 20);
  EXPECT_EQ(RunTogether(*engine, {b})[0].cached_tokens, 20);
  EXPECT_EQ(RunTogether(*engine, {r})[0].cached_tokens, 20);
  EXPECT_EQ(engine->Stats().free_blocks, 64);
}

TEST(EngineTest, AbortsMidPrefillAndMidDecodeFreeBlocks) {
  auto engine = MakeEngine(1, 80, 4, 8, 8);  // prefill chunks of at most 8 tokens
  Engine* e = engine.get();
  Collector c;
  GenerationRequest decode;
  decode.prompt = {5, 6};
  decode.max_tokens = 30;
  decode.sampling.temperature = 0;
  decode.ignore_eos = true;
  GenerationRequest long_prompt = decode;
  long_prompt.prompt.assign(200, 9);
  long_prompt.max_tokens = 5;
  int64_t long_id = 0, self_id = 0;
  std::mutex mu;
  auto long_cb = c.For(1);
  auto self_cb = c.For(2);
  // Request 0 aborts the long prompt (still prefilling: 200 tokens in chunks
  // of <= 8) after its own 3rd token, and request 2 after its 4th token.
  int seen0 = 0;
  auto cb0 = c.For(0);
  auto id0 = e->Submit(decode, [&](const RequestOutput& out) {
    cb0(out);
    if (!out.finished && ++seen0 == 3) {
      std::lock_guard<std::mutex> lock(mu);
      e->Abort(long_id);
    }
  });
  ASSERT_TRUE(id0.ok());
  {
    std::lock_guard<std::mutex> lock(mu);
    auto id = e->Submit(long_prompt, long_cb);
    ASSERT_TRUE(id.ok());
    long_id = *id;
  }
  int seen2 = 0;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto id = e->Submit(decode, [&](const RequestOutput& out) {
      self_cb(out);
      if (!out.finished && ++seen2 == 4) e->Abort(self_id);
    });
    ASSERT_TRUE(id.ok());
    self_id = *id;
  }
  const std::vector<Result> res = c.Wait();
  EXPECT_EQ(res[0].reason, FinishReason::kLength);
  EXPECT_EQ(res[1].reason, FinishReason::kAborted);
  EXPECT_TRUE(res[1].tokens.empty()) << "aborted before its prefill finished";
  EXPECT_EQ(res[2].reason, FinishReason::kAborted);
  EXPECT_GE(res[2].tokens.size(), 4u);
  EXPECT_LT(res[2].tokens.size(), 30u);
  const EngineStats st = engine->Stats();
  EXPECT_EQ(st.free_blocks, 80);
  EXPECT_EQ(st.running + st.waiting, 0);
}

GenerationRequest SeededRequest() {
  GenerationRequest r;
  r.prompt = {3, 1, 4, 1, 5};
  r.max_tokens = 24;
  r.ignore_eos = true;
  r.sampling.temperature = 0.9;
  r.sampling.top_p = 0.95;
  r.sampling.top_k = 40;
  r.sampling.seed = 1234;
  r.sampling.logprobs = 3;
  return r;
}

TEST(EngineTest, SeededSamplingIgnoresBatchComposition) {
  GenerationRequest r = SeededRequest();
  std::vector<int32_t> alone;
  {
    auto engine = MakeEngine(1, 64, 4, 8, 64);
    alone = RunTogether(*engine, {r})[0].tokens;
  }
  std::vector<GenerationRequest> mix = Workload(12, 9);
  for (auto& m : mix) {
    m.sampling.temperature = 1.0;  // unseeded sampling around it
  }
  mix.insert(mix.begin() + 5, r);
  auto engine = MakeEngine(2, 64, 4, 8, 16);
  const std::vector<Result> res = RunTogether(*engine, mix);
  EXPECT_EQ(res[5].tokens, alone);
  // Another seed gives other tokens (24 draws from a spread distribution).
  r.sampling.seed = 99;
  auto engine2 = MakeEngine(1, 64, 4, 8, 64);
  EXPECT_NE(RunTogether(*engine2, {r})[0].tokens, alone);
}

TEST(EngineTest, SeededSamplingIgnoresBatchCompositionOnCudaSim) {
  GenerationRequest r = SeededRequest();
  r.max_tokens = 12;
  r.sampling.repetition_penalty = 1.2;
  r.sampling.frequency_penalty = 0.5;
  r.sampling.min_p = 0.02;
  auto alone_engine = MakeEngine(2, 64, 4, 8, 64, DeviceKind::kCudaSim);
  const std::vector<int32_t> alone = RunTogether(*alone_engine, {r})[0].tokens;
  std::vector<GenerationRequest> mix = Workload(6, 9);
  for (auto& m : mix) {
    m.max_tokens = std::min(m.max_tokens, 8);
    m.sampling.temperature = 1.0;
    m.sampling.presence_penalty = 1.0;
  }
  mix.insert(mix.begin() + 3, r);
  auto engine = MakeEngine(2, 64, 4, 8, 16, DeviceKind::kCudaSim);
  EXPECT_EQ(RunTogether(*engine, mix)[3].tokens, alone);
}

// Two sequences decoded step by step: the device's outputs against the host
// Sampler (the CPU op) on the logits of the same step.
class DeviceSamplingTest : public ::testing::TestWithParam<std::tuple<DeviceKind, int>> {};

TEST_P(DeviceSamplingTest, MatchesHostSamplerOnTheSameLogits) {
  const auto [device, tp] = GetParam();
  ExecutorOptions eo;
  eo.device = device;
  eo.tp = tp;
  eo.threads_per_rank = 1;
  eo.num_kv_blocks = 16;
  eo.block_size = 8;
  auto ex = Executor::Open(ModelDir(), eo);
  ASSERT_TRUE(ex.ok()) << ex.status();
  const int vocab = (*ex)->config().vocab_size;
  SamplingParams a;
  a.temperature = 0.8;
  a.top_k = 30;
  a.top_p = 0.9;
  a.min_p = 0.01;
  a.repetition_penalty = 1.3;
  a.presence_penalty = 0.4;
  a.frequency_penalty = 0.2;
  a.logprobs = 5;
  a.seed = 7;
  SamplingParams b;
  b.temperature = 0;
  b.repetition_penalty = 2.0;
  b.logprobs = 2;
  const std::vector<SamplingParams> params = {a, b};
  std::vector<Sampler> on_device, on_host;
  std::vector<std::vector<int32_t>> ctx = {{3, 1, 4, 1, 5, 9, 2, 6}, {2, 7, 1, 8}};
  std::vector<int> prompt_len, done(2, 0);
  for (size_t s = 0; s < 2; ++s) {
    on_device.emplace_back(params[s], 0);
    on_host.emplace_back(params[s], 0);
    prompt_len.push_back(int(ctx[s].size()));
  }
  for (int step = 0; step < 16; ++step) {
    StepBatch batch;
    batch.max_blocks_per_seq = 8;  // sequence s owns blocks 8s .. 8s+7
    StepSampling sampling;
    for (int s = 0; s < 2; ++s) {
      for (int i = 0; i < 8; ++i) batch.block_tables.push_back(8 * s + i);
      for (int p = done[s]; p < int(ctx[s].size()); ++p) {
        batch.token_ids.push_back(ctx[s][p]);
        batch.positions.push_back(p);
        batch.token_seq.push_back(s);
        batch.slot_mapping.push_back((8 * s + p / 8) * 8 + p % 8);
      }
      done[s] = int(ctx[s].size());
      batch.logits_rows.push_back(batch.num_tokens() - 1);
      sampling.rows.push_back(on_device[s].NextRow(ctx[s], prompt_len[s], &sampling.penalties));
    }
    std::vector<SampleOutput> out;
    std::vector<float> logits;
    ASSERT_OK((*ex)->Step(batch, sampling, &out, &logits));
    ASSERT_EQ(out.size(), 2u);
    ASSERT_EQ(logits.size(), 2u * vocab);
    for (int s = 0; s < 2; ++s) {
      const SampledToken want = SampleOnHost(on_host[s], logits.data() + s * vocab, vocab, ctx[s], prompt_len[s]);
      const SampledToken got = Sampler::ToToken(out[s]);
      ASSERT_EQ(got.token, want.token) << "step " << step << ", sequence " << s;
      EXPECT_NEAR(got.logprob, want.logprob, 1e-4);
      ASSERT_EQ(got.top_logprobs.size(), want.top_logprobs.size());
      for (size_t j = 0; j < want.top_logprobs.size(); ++j) {
        EXPECT_EQ(got.top_logprobs[j].first, want.top_logprobs[j].first);
        EXPECT_NEAR(got.top_logprobs[j].second, want.top_logprobs[j].second, 1e-4);
      }
      ctx[s].push_back(got.token);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Devices, DeviceSamplingTest,
                         ::testing::Combine(::testing::Values(DeviceKind::kCpu, DeviceKind::kCudaSim),
                                            ::testing::Values(1, 2)),
                         [](const auto& i) {
                           return std::string(std::get<0>(i.param) == DeviceKind::kCpu ? "cpu" : "cuda_sim") + "_tp" +
                                  std::to_string(std::get<1>(i.param));
                         });

TEST(EngineTest, ImpossibleAndInvalidRequestsFailAlone) {
  auto engine = MakeEngine(1, 8, 4, 8, 64);  // 32 token slots
  Collector c;
  GenerationRequest ok;
  ok.prompt = {1, 2, 3};
  ok.max_tokens = 5;
  ok.sampling.temperature = 0;
  ok.ignore_eos = true;
  ASSERT_TRUE(engine->Submit(ok, c.For(0)).ok());
  GenerationRequest big = ok;
  big.prompt.assign(30, 1);
  big.max_tokens = 10;
  auto st = engine->Submit(big, [](const RequestOutput&) { ADD_FAILURE() << "refused requests get no events"; });
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(std::string(st.status().message()), ::testing::HasSubstr("KV blocks"));
  GenerationRequest oov = ok;
  oov.prompt = {1, 97};
  EXPECT_THAT(std::string(engine->Submit(oov, nullptr).status().message()), ::testing::HasSubstr("vocabulary"));
  GenerationRequest bad_top_p = ok;
  bad_top_p.sampling.top_p = 0;
  EXPECT_THAT(std::string(engine->Submit(bad_top_p, nullptr).status().message()), ::testing::HasSubstr("top_p"));
  GenerationRequest too_long = ok;
  too_long.max_tokens = 1000;
  EXPECT_THAT(std::string(engine->Submit(too_long, nullptr).status().message()), ::testing::HasSubstr("maximum model length"));
  const std::vector<Result> res = c.Wait();
  EXPECT_EQ(res[0].reason, FinishReason::kLength);
  EXPECT_EQ(res[0].tokens.size(), 5u);
  EXPECT_EQ(engine->Stats().free_blocks, 8);
}

TEST(EngineTest, StopTokensAndEos) {
  auto engine = MakeEngine(1, 64, 4, 8, 64);
  GenerationRequest r;
  r.prompt = {10, 20, 30};
  r.max_tokens = 12;
  r.sampling.temperature = 0;
  r.ignore_eos = true;
  const std::vector<int32_t> full = RunTogether(*engine, {r})[0].tokens;
  ASSERT_EQ(full.size(), 12u);
  // Stopping on the 5th greedy token ends the request there, reason stop.
  r.stop_token_ids = {full[4]};
  const size_t first = std::find(full.begin(), full.end(), full[4]) - full.begin();
  Result res = RunTogether(*engine, {r})[0];
  EXPECT_EQ(res.reason, FinishReason::kStop);
  EXPECT_EQ(res.tokens, std::vector<int32_t>(full.begin(), full.begin() + first + 1));
  // Greedy logprobs are the largest: negative, and finite.
  for (float lp : res.logprobs) {
    EXPECT_LE(lp, 0.0f);
    EXPECT_GT(lp, -50.0f);
  }
}

}  // namespace
}  // namespace gqa
