// The sampling op: the CPU backend against hand computation, and the CUDA
// kernel on the SIMT interpreter against the CPU backend, token for token,
// on random logits with odd vocabulary sizes, ties, penalties and top-n.
#include <algorithm>
#include <array>
#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_backend.h"
#include "tests/test_util.h"

namespace gqa {
namespace {

struct Case {
  std::vector<float> logits;  // [rows, vocab]
  int vocab = 0;
  std::vector<SamplingRow> rows;
  std::vector<PenaltyEntry> penalties;
};

// Runs Backend::Sample through device buffers.
std::vector<SampleOutput> RunSample(Backend& b, const Case& c) {
  const int rows = int(c.rows.size());
  auto alloc = [&](size_t bytes) {
    absl::StatusOr<DeviceBuffer> d = b.Allocate(std::max<size_t>(bytes, 1));
    EXPECT_TRUE(d.ok()) << d.status();
    return std::move(*d);
  };
  DeviceBuffer logits = alloc(c.logits.size() * sizeof(float));
  DeviceBuffer scratch = alloc(c.logits.size() * sizeof(float));
  DeviceBuffer params = alloc(rows * sizeof(SamplingRow));
  DeviceBuffer pen = alloc(c.penalties.size() * sizeof(PenaltyEntry));
  DeviceBuffer out = alloc(rows * sizeof(SampleOutput));
  b.CopyToDevice(logits.data(), c.logits.data(), c.logits.size() * sizeof(float));
  b.CopyToDevice(params.data(), c.rows.data(), rows * sizeof(SamplingRow));
  if (!c.penalties.empty()) b.CopyToDevice(pen.data(), c.penalties.data(), c.penalties.size() * sizeof(PenaltyEntry));
  b.Sample(logits.as<float>(), rows, c.vocab, params.as<SamplingRow>(), pen.as<PenaltyEntry>(), scratch.as<float>(),
           out.as<SampleOutput>());
  std::vector<SampleOutput> res(rows);
  b.CopyToHost(res.data(), out.data(), rows * sizeof(SampleOutput));
  const absl::Status st = b.Synchronize();
  EXPECT_TRUE(st.ok()) << st;
  return res;
}

Backend& Cpu() {
  static CpuBackend* b = new CpuBackend(2);
  return *b;
}

Backend& CudaSim() {
  static Backend* b = [] {
    absl::StatusOr<std::unique_ptr<Backend>> r = cuda_sim::CreateBackend(0);
    GQA_CHECK(r.ok(), "cuda-sim backend");
    return r->release();
  }();
  return *b;
}

const std::vector<float> kLogits = {1.0f, 2.5f, -0.5f, 2.0f, 0.3f, 1.7f, -2.0f, 0.9f};

Case OneRow(const std::vector<float>& logits, const SamplingRow& p, std::vector<PenaltyEntry> pen = {}) {
  Case c;
  c.logits = logits;
  c.vocab = int(logits.size());
  c.rows = {p};
  c.rows[0].penalty_begin = 0;
  c.rows[0].penalty_end = int(pen.size());
  c.penalties = std::move(pen);
  return c;
}

TEST(SampleOpTest, MassIsExp) {
  EXPECT_EQ(sampling::Mass(0.0f), uint64_t{1} << sampling::kMassBits);
  EXPECT_EQ(sampling::Mass(-INFINITY), 0u);
  EXPECT_EQ(sampling::Mass(NAN), 0u);
  double worst = 0;
  uint64_t prev = sampling::Mass(0.0f);
  for (float z = -0.001f; z > -28.0f; z *= 1.01f) {
    const uint64_t m = sampling::Mass(z);
    // Truncated to an integer: within 1 of the exact value, else relative.
    const double exact = std::exp(double(z)) * double(uint64_t{1} << sampling::kMassBits);
    worst = std::max(worst, (std::abs(double(m) - exact) - 1) / exact);
    EXPECT_LE(m, prev) << z;
    prev = m;
  }
  EXPECT_LT(worst, 1e-6);
}

TEST(SampleOpTest, GreedyIsTheFirstMaximum) {
  SamplingRow p;
  EXPECT_EQ(RunSample(Cpu(), OneRow(kLogits, p))[0].token, 1);
  EXPECT_EQ(RunSample(Cpu(), OneRow({0.5f, 3.0f, 3.0f, -1.0f}, p))[0].token, 1);
  EXPECT_EQ(RunSample(Cpu(), OneRow({-0.0f, 0.0f, -1.0f}, p))[0].token, 0);
}

// The vectorised greedy choice against the order of sampling::Key itself,
// element by element: NaN as -inf, -0 equal to 0, the first of equals; the
// maximum in the vector body, in the tail, repeated across both, and rows
// of only -inf and NaN.
TEST(SampleOpTest, ArgMaxFollowsKeyOrder) {
  const auto by_key = [](const std::vector<float>& v) {
    uint64_t best = sampling::Key(v[0], 0);
    for (size_t i = 1; i < v.size(); ++i) best = std::max(best, sampling::Key(v[i], int32_t(i)));
    return sampling::KeyToken(best);
  };
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> small(-3, 3);
  const float nan = std::nanf("");
  for (int vocab : {1, 2, 7, 8, 9, 16, 23, 100, 1031}) {
    for (int trial = 0; trial < 60; ++trial) {
      std::vector<float> v(vocab);
      for (float& x : v) {
        const int k = small(rng);
        x = k == -3 ? nan : k == 3 ? -INFINITY : k == 0 ? (rng() % 2 ? -0.0f : 0.0f) : float(k);
      }
      if (trial % 3 == 0) std::fill(v.begin(), v.end(), trial % 2 ? nan : -INFINITY);
      if (trial % 3 == 1) v[rng() % vocab] = trial % 2 ? -INFINITY : nan;
      ASSERT_EQ(cpu::ArgMaxLogit(v.data(), vocab), by_key(v)) << "vocab " << vocab << " trial " << trial;
    }
  }
}

TEST(SampleOpTest, PenaltiesByHand) {
  SamplingRow p;
  // Repetition 2 on token 1 (2.5 -> 1.25): token 3 (2.0) wins.
  p.repetition_penalty = 2.0f;
  EXPECT_EQ(RunSample(Cpu(), OneRow(kLogits, p, {{1, 0}}))[0].token, 3);
  // Negative logits are multiplied: token 2 (-0.5 -> -1.0); the max stays.
  EXPECT_EQ(RunSample(Cpu(), OneRow(kLogits, p, {{2, 1}}))[0].token, 1);
  // Frequency 0.3 x 2 + presence 0.1 lower token 1 to 1.8: token 3 wins; a
  // prompt-only token (output count 0) is not penalised.
  p = SamplingRow();
  p.frequency_penalty = 0.3f;
  p.presence_penalty = 0.1f;
  EXPECT_EQ(RunSample(Cpu(), OneRow(kLogits, p, {{0, 0}, {1, 2}}))[0].token, 3);
  EXPECT_EQ(RunSample(Cpu(), OneRow(kLogits, p, {{1, 0}, {0, 1}}))[0].token, 1);
}

TEST(SampleOpTest, LogprobsOfTheRawLogits) {
  SamplingRow p;
  p.num_top_logprobs = 3;
  p.repetition_penalty = 2.0f;  // changes the choice, not the logprobs
  const SampleOutput o = RunSample(Cpu(), OneRow(kLogits, p, {{1, 0}}))[0];
  double z = 0;
  for (float l : kLogits) z += std::exp(double(l));
  EXPECT_EQ(o.token, 3);
  EXPECT_NEAR(o.logprob, 2.0 - std::log(z), 1e-6);
  ASSERT_EQ(o.num_top, 3);
  EXPECT_EQ(o.top_tokens[0], 1);
  EXPECT_EQ(o.top_tokens[1], 3);
  EXPECT_EQ(o.top_tokens[2], 5);
  EXPECT_NEAR(o.top_logprobs[0], 2.5 - std::log(z), 1e-6);
  EXPECT_NEAR(o.top_logprobs[2], 1.7 - std::log(z), 1e-6);
}

// A vocabulary-sized row (logits from -100 to 20, some -inf, a tail past
// the vector width): the log-probabilities within 1e-6 of a float64
// log-sum-exp; a NaN anywhere makes them NaN.
TEST(SampleOpTest, LogprobsOfAVocabularyRowMatchFloat64) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> d(-100.0f, 20.0f);
  std::vector<float> logits(50021);
  for (float& l : logits) l = rng() % 50 == 0 ? -INFINITY : d(rng);
  SamplingRow p;
  p.num_top_logprobs = 2;
  const SampleOutput o = RunSample(Cpu(), OneRow(logits, p, {}))[0];
  const double mx = *std::max_element(logits.begin(), logits.end());
  double z = 0;
  for (float l : logits) z += std::exp(double(l) - mx);
  const double log_z = mx + std::log(z);
  EXPECT_NEAR(o.logprob, logits[o.token] - log_z, 1e-6);
  ASSERT_EQ(o.num_top, 2);
  EXPECT_NEAR(o.top_logprobs[1], logits[o.top_tokens[1]] - log_z, 1e-6);
  logits[777] = std::nanf("");
  EXPECT_TRUE(std::isnan(RunSample(Cpu(), OneRow(logits, p, {}))[0].logprob));
}

TEST(SampleOpTest, FiltersKeepTheStatedTokens) {
  // Softmax of kLogits at temperature 1, by rank: 1, 3, 5, 0, 7, 4, 2, 6.
  std::vector<double> prob(8);
  double z = 0;
  for (float l : kLogits) z += std::exp(double(l));
  for (int i = 0; i < 8; ++i) prob[i] = std::exp(double(kLogits[i])) / z;
  auto drawn = [&](SamplingRow p) {
    std::vector<int> seen;
    for (int i = 0; i < 1000; ++i) {
      p.uniform = (i + 0.5) / 1000;
      seen.push_back(RunSample(Cpu(), OneRow(kLogits, p))[0].token);
    }
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    return seen;
  };
  SamplingRow p;
  p.temperature = 1.0f;
  EXPECT_EQ(drawn(p), (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
  p.top_k = 3;
  EXPECT_EQ(drawn(p), (std::vector<int>{1, 3, 5}));
  p.top_k = 0;
  p.top_p = float(prob[1] + prob[3] + 0.01);  // reached with the third
  EXPECT_EQ(drawn(p), (std::vector<int>{1, 3, 5}));
  p.top_p = float(prob[1] + prob[3] - 0.01);
  EXPECT_EQ(drawn(p), (std::vector<int>{1, 3}));
  p.top_p = 1.0f;
  p.min_p = float(prob[0] / prob[1] - 0.01);  // token 0 passes, token 7 does not
  EXPECT_EQ(drawn(p), (std::vector<int>{0, 1, 3, 5}));
  // Ties at the top-k cut keep the lower ids.
  p = SamplingRow();
  p.temperature = 1.0f;
  p.top_k = 2;
  const std::vector<float> tied = {0.0f, 1.0f, 0.5f, 1.0f, 1.0f};
  std::vector<int> seen;
  for (int i = 0; i < 100; ++i) {
    p.uniform = (i + 0.5) / 100;
    seen.push_back(RunSample(Cpu(), OneRow(tied, p))[0].token);
  }
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), 50);
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 3), 50);
}

// Random rows over every parameter combination; some with heavy ties.
Case RandomCase(int vocab, int rows, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  Case c;
  c.vocab = vocab;
  c.logits.resize(size_t(rows) * vocab);
  for (int r = 0; r < rows; ++r) {
    const bool ties = r % 4 == 3, masked = r % 16 == 5;
    for (int i = 0; i < vocab; ++i) {
      const float v = normal(rng);
      c.logits[size_t(r) * vocab + i] = ties ? std::round(v) : (masked && rng() % 3 == 0 ? -INFINITY : v);
    }
    SamplingRow p;
    const int mode = r % 8;
    p.temperature = mode == 0 ? 0.0f : std::array<float, 4>{0.3f, 0.7f, 1.0f, 1.8f}[rng() % 4];
    if (mode & 1) p.top_k = std::array<int, 5>{1, 5, 40, 999, vocab + 3}[rng() % 5];
    if (mode & 2) p.top_p = std::array<float, 4>{0.1f, 0.5f, 0.9f, 0.99f}[rng() % 4];
    if (mode & 4) p.min_p = std::array<float, 3>{0.01f, 0.1f, 0.5f}[rng() % 3];
    if (rng() % 2) {
      p.repetition_penalty = std::array<float, 3>{1.0f, 1.3f, 0.8f}[rng() % 3];
      p.presence_penalty = float(uni(rng) * 4 - 2);
      p.frequency_penalty = float(uni(rng) * 4 - 2);
      p.penalty_begin = int(c.penalties.size());
      std::vector<int> ids(vocab);
      for (int i = 0; i < vocab; ++i) ids[i] = i;
      std::shuffle(ids.begin(), ids.end(), rng);
      const int n = int(rng() % std::min(vocab, 300));
      for (int i = 0; i < n; ++i) c.penalties.push_back({ids[i], int(rng() % 4)});
      p.penalty_end = int(c.penalties.size());
    }
    p.num_top_logprobs = int(rng() % (kMaxTopLogprobs + 1));
    p.uniform = uni(rng);
    c.rows.push_back(p);
  }
  return c;
}

// Equal infinities, or within tol relative to 1 + |want|.
::testing::AssertionResult Close(float got, float want) {
  if (got == want || std::abs(got - want) <= 1e-4 * (1 + std::abs(want))) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << got << " vs " << want;
}

void ExpectSameAsCpu(const Case& c, const std::string& what) {
  const std::vector<SampleOutput> want = RunSample(Cpu(), c);
  const std::vector<SampleOutput> got = RunSample(CudaSim(), c);
  for (size_t r = 0; r < c.rows.size(); ++r) {
    const std::string at = absl::StrCat(what, " row ", r, " (temperature ", c.rows[r].temperature, ", top_k ",
                                        c.rows[r].top_k, ", top_p ", c.rows[r].top_p, ", min_p ", c.rows[r].min_p, ")");
    EXPECT_EQ(got[r].token, want[r].token) << at;
    EXPECT_TRUE(Close(got[r].logprob, want[r].logprob)) << at;
    ASSERT_EQ(got[r].num_top, want[r].num_top) << at;
    for (int j = 0; j < want[r].num_top; ++j) {
      EXPECT_EQ(got[r].top_tokens[j], want[r].top_tokens[j]) << at << " top " << j;
      EXPECT_TRUE(Close(got[r].top_logprobs[j], want[r].top_logprobs[j])) << at << " top " << j;
    }
  }
}

TEST(SampleOpTest, CudaSimMatchesCpu) {
  for (int vocab : {1, 7, 33, 1000}) ExpectSameAsCpu(RandomCase(vocab, 128, vocab), absl::StrCat("vocab ", vocab));
  ExpectSameAsCpu(RandomCase(32003, 48, 5), "vocab 32003");
}

TEST(SampleOpTest, ConcatColumnsMatchesCopies) {
  // Three packed parts of widths 5, 4, 4, 10 floats apart, two rows.
  const int rows = 2, stride = 10;
  const std::vector<int64_t> cols = {0, 5, 9, 13};
  std::vector<float> src(3 * stride);
  for (size_t i = 0; i < src.size(); ++i) src[i] = float(i);
  std::vector<float> want(rows * 13);
  for (int p = 0; p < 3; ++p)
    for (int i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols[p + 1] - cols[p]; ++j) want[i * 13 + cols[p] + j] = src[p * stride + i * (cols[p + 1] - cols[p]) + j];
  for (Backend* b : {&Cpu(), &CudaSim()}) {
    absl::StatusOr<DeviceBuffer> s = b->Allocate(src.size() * sizeof(float));
    absl::StatusOr<DeviceBuffer> d = b->Allocate(want.size() * sizeof(float));
    ASSERT_TRUE(s.ok() && d.ok());
    b->CopyToDevice(s->data(), src.data(), src.size() * sizeof(float));
    b->ConcatColumns(s->as<float>(), 3, stride, cols.data(), rows, d->as<float>());
    std::vector<float> got(want.size());
    b->CopyToHost(got.data(), d->data(), got.size() * sizeof(float));
    ASSERT_OK(b->Synchronize());
    EXPECT_EQ(got, want) << b->Name();
  }
}

}  // namespace
}  // namespace gqa
