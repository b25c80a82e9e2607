// The sampler against the distribution it is meant to draw from (a
// chi-square test on a small vocabulary), on the host and through the
// sampling op of the CPU and CUDA (interpreter) backends, and its penalties
// and logprobs against hand computation.
#include <cmath>
#include <functional>
#include <map>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "engine/sampler.h"
#include "tests/host_sampler.h"
#include "tests/test_util.h"

namespace gqa {
namespace {

// The intended distribution, computed independently in double: penalties
// none; temperature, then top-k, min-p and top-p on sorted probabilities.
std::vector<double> Intended(const std::vector<float>& logits, const SamplingParams& p) {
  const int v = int(logits.size());
  std::vector<int> idx(v);
  for (int i = 0; i < v; ++i) idx[i] = i;
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  std::vector<double> w(v, 0.0);
  const int k = p.top_k > 0 ? std::min(p.top_k, v) : v;
  double z = 0;
  for (int r = 0; r < k; ++r) z += std::exp(logits[idx[r]] / p.temperature);
  const double pmax = std::exp(logits[idx[0]] / p.temperature) / z;
  double cum = 0;
  for (int r = 0; r < k; ++r) {
    const double pr = std::exp(logits[idx[r]] / p.temperature) / z;
    if (pr < p.min_p * pmax) continue;
    w[idx[r]] = pr;
    cum += pr;
    if (cum >= p.top_p * (1 - 1e-12)) break;  // the nucleus is complete
  }
  double total = 0;
  for (double x : w) total += x;
  for (double& x : w) x /= total;
  return w;
}

// `draws` tokens of one request from the same logits.
using DrawFn = std::function<std::vector<int32_t>(const std::vector<float>&, const SamplingParams&, int draws)>;

std::vector<int32_t> DrawOnHost(const std::vector<float>& logits, const SamplingParams& p, int draws) {
  Sampler s(p, 0);
  std::vector<int32_t> tokens;
  for (int i = 0; i < draws; ++i) tokens.push_back(SampleOnHost(s, logits.data(), int(logits.size()), {}, 0).token);
  return tokens;
}

// All draws as the rows of one Backend::Sample call.
std::vector<int32_t> DrawOn(Backend& b, const std::vector<float>& logits, const SamplingParams& p, int draws) {
  Sampler s(p, 0);
  std::vector<SamplingRow> rows;
  std::vector<PenaltyEntry> penalties;
  std::vector<float> all;
  for (int i = 0; i < draws; ++i) {
    rows.push_back(s.NextRow({}, 0, &penalties));
    all.insert(all.end(), logits.begin(), logits.end());
  }
  auto buf = [&](size_t bytes) { return std::move(b.Allocate(bytes).value()); };
  DeviceBuffer d_logits = buf(all.size() * sizeof(float)), d_scratch = buf(all.size() * sizeof(float));
  DeviceBuffer d_rows = buf(rows.size() * sizeof(SamplingRow)), d_pen = buf(sizeof(PenaltyEntry));
  DeviceBuffer d_out = buf(rows.size() * sizeof(SampleOutput));
  b.CopyToDevice(d_logits.data(), all.data(), all.size() * sizeof(float));
  b.CopyToDevice(d_rows.data(), rows.data(), rows.size() * sizeof(SamplingRow));
  b.Sample(d_logits.as<float>(), draws, int(logits.size()), d_rows.as<SamplingRow>(), d_pen.as<PenaltyEntry>(),
           d_scratch.as<float>(), d_out.as<SampleOutput>());
  std::vector<SampleOutput> out(draws);
  b.CopyToHost(out.data(), d_out.data(), out.size() * sizeof(SampleOutput));
  EXPECT_TRUE(b.Synchronize().ok());
  std::vector<int32_t> tokens;
  for (const SampleOutput& o : out) tokens.push_back(o.token);
  return tokens;
}

void ExpectFollowsWith(const DrawFn& draw, const std::vector<float>& logits, const SamplingParams& p, int draws);

struct Way {
  const char* name;
  DrawFn draw;
  int draws_divisor;  // the interpreter runs a row in about a millisecond: fewer draws there
};

std::vector<Way> Ways() {
  static CpuBackend* cpu = new CpuBackend(2);
  static Backend* sim = cuda_sim::CreateBackend(0).value().release();
  return {{"host", DrawOnHost, 1},
          {"cpu op", [](auto& l, auto& p, int n) { return DrawOn(*cpu, l, p, n); }, 1},
          {"cuda-sim op", [](auto& l, auto& p, int n) { return DrawOn(*sim, l, p, n); }, 10}};
}

void ExpectFollows(const std::vector<float>& logits, const SamplingParams& p, int draws) {
  for (const Way& way : Ways()) {
    SCOPED_TRACE(way.name);
    ExpectFollowsWith(way.draw, logits, p, draws / way.draws_divisor);
  }
}

void ExpectFollowsWith(const DrawFn& draw, const std::vector<float>& logits, const SamplingParams& p, int draws) {
  const std::vector<double> want = Intended(logits, p);
  std::vector<int> count(logits.size(), 0);
  for (int32_t t : draw(logits, p, draws)) ++count[t];
  double chi2 = 0;
  int dof = -1;
  for (size_t t = 0; t < logits.size(); ++t) {
    if (want[t] == 0) {
      EXPECT_EQ(count[t], 0) << "token " << t << " is outside the allowed set";
      continue;
    }
    const double e = want[t] * draws;
    chi2 += (count[t] - e) * (count[t] - e) / e;
    ++dof;
  }
  // 99.9th percentile of chi-square for up to 7 degrees of freedom is 24.3.
  ASSERT_LE(dof, 7);
  EXPECT_LT(chi2, 24.3) << "temperature " << p.temperature << " top_k " << p.top_k << " top_p " << p.top_p
                        << " min_p " << p.min_p;
}

const std::vector<float> kLogits = {1.0f, 2.5f, -0.5f, 2.0f, 0.3f, 1.7f, -2.0f, 0.9f};

TEST(SamplerTest, TemperatureFollowsSoftmax) {
  SamplingParams p;
  p.seed = 11;
  p.temperature = 0.7;
  ExpectFollows(kLogits, p, 40000);
  p.temperature = 1.6;
  ExpectFollows(kLogits, p, 40000);
}

TEST(SamplerTest, TopKTopPMinP) {
  SamplingParams p;
  p.seed = 12;
  p.temperature = 1.0;
  p.top_k = 4;
  ExpectFollows(kLogits, p, 40000);
  p.top_k = 0;
  p.top_p = 0.8;
  ExpectFollows(kLogits, p, 40000);
  p.top_k = 5;
  p.top_p = 0.9;
  p.temperature = 0.8;
  ExpectFollows(kLogits, p, 40000);
  p = SamplingParams();
  p.seed = 13;
  p.min_p = 0.3;
  ExpectFollows(kLogits, p, 40000);
}

TEST(SamplerTest, SameSeedSameTokens) {
  SamplingParams p;
  p.seed = 5;
  Sampler a(p, 0), b(p, 1);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(SampleOnHost(a, kLogits.data(), 8, {}, 0).token, SampleOnHost(b, kLogits.data(), 8, {}, 0).token);
  }
}

TEST(SamplerTest, PenaltiesByHand) {
  SamplingParams p;
  p.temperature = 0;
  // Token 1 (2.5) wins; repetition penalty 2 on a context holding 1 halves it
  // to 1.25, so token 3 (2.0) wins.
  p.repetition_penalty = 2.0;
  EXPECT_EQ(SampleOnHost(Sampler(p, 0), kLogits.data(), 8, {1}, 1).token, 3);
  // Negative logits are multiplied: token 2 (-0.5) becomes -1.0; the max is unchanged.
  EXPECT_EQ(SampleOnHost(Sampler(p, 0), kLogits.data(), 8, {2}, 1).token, 1);
  // Frequency 0.3 x 2 occurrences + presence 0.1 in the output lowers token 1
  // to 1.8: token 3 wins. In the prompt only, it is not penalised.
  p = SamplingParams();
  p.temperature = 0;
  p.frequency_penalty = 0.3;
  p.presence_penalty = 0.1;
  EXPECT_EQ(SampleOnHost(Sampler(p, 0), kLogits.data(), 8, {0, 1, 1}, 1).token, 3);
  EXPECT_EQ(SampleOnHost(Sampler(p, 0), kLogits.data(), 8, {1, 1, 0}, 2).token, 1);
}

TEST(SamplerTest, Logprobs) {
  SamplingParams p;
  p.temperature = 0;
  p.logprobs = 3;
  const SampledToken t = SampleOnHost(Sampler(p, 0), kLogits.data(), 8, {}, 0);
  double z = 0;
  for (float l : kLogits) z += std::exp(double(l));
  EXPECT_NEAR(t.logprob, 2.5 - std::log(z), 1e-5);
  ASSERT_EQ(t.top_logprobs.size(), 3u);
  EXPECT_EQ(t.top_logprobs[0].first, 1);
  EXPECT_EQ(t.top_logprobs[1].first, 3);
  EXPECT_EQ(t.top_logprobs[2].first, 5);
  EXPECT_NEAR(t.top_logprobs[2].second, 1.7 - std::log(z), 1e-5);
}

TEST(SamplerTest, ValidationNamesTheField) {
  SamplingParams p;
  p.temperature = -1;
  EXPECT_THAT(std::string(ValidateSamplingParams(p, 8).message()), ::testing::HasSubstr("'temperature'"));
  p = SamplingParams();
  p.top_k = -2;
  EXPECT_THAT(std::string(ValidateSamplingParams(p, 8).message()), ::testing::HasSubstr("'top_k'"));
  p = SamplingParams();
  p.logprobs = 21;
  EXPECT_THAT(std::string(ValidateSamplingParams(p, 8).message()), ::testing::HasSubstr("'logprobs'"));
  p = SamplingParams();
  p.repetition_penalty = 0;
  EXPECT_THAT(std::string(ValidateSamplingParams(p, 8).message()), ::testing::HasSubstr("'repetition_penalty'"));
  EXPECT_TRUE(ValidateSamplingParams(SamplingParams(), 8).ok());
}

}  // namespace
}  // namespace gqa
