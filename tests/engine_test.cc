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
                                   DeviceKind device = DeviceKind::kCpu) {
  ExecutorOptions eo;
  eo.device = device;
  eo.tp = tp;
  eo.threads_per_rank = 1;
  eo.num_kv_blocks = blocks;
  eo.block_size = block_size;
  auto ex = Executor::Open(ModelDir(), eo);
  EXPECT_TRUE(ex.ok()) << ex.status();
  EngineOptions o;
  o.max_num_seqs = max_seqs;
  o.max_num_batched_tokens = budget;
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
  // Alone: one request at a time.
  std::vector<std::vector<int32_t>> alone;
  {
    auto engine = MakeEngine(tp, 64, 4, 1, 4096);
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
