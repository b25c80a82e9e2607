// Every CPU op against a float64 reference on fresh random inputs, with odd
// sizes and GQA group sizes 1, 2, 4, 8 and MHA.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "tests/test_util.h"

namespace gqa {
namespace {

class Rng {
 public:
  explicit Rng(uint64_t seed) : gen_(seed) {}
  std::vector<float> Floats(size_t n, float scale = 1.0f) {
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (float& x : v) x = d(gen_);
    return v;
  }
  int Int(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(gen_); }
  std::mt19937_64& gen() { return gen_; }

 private:
  std::mt19937_64 gen_;
};

// Weights stored in `dtype` plus their exact values as doubles.
struct StoredMatrix {
  std::vector<uint8_t> bytes;
  std::vector<double> exact;
  MatrixView view;
};

StoredMatrix Store(const std::vector<float>& values, int64_t rows, int64_t cols, DType dtype) {
  StoredMatrix m;
  m.bytes.resize(values.size() * DTypeSize(dtype));
  m.exact.resize(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(m.bytes.data() + 4 * i, &values[i], 4);
      m.exact[i] = values[i];
    } else {
      const uint16_t h = dtype == DType::kBF16 ? gqa::FloatToBf16(values[i]) : gqa::FloatToF16(values[i]);
      std::memcpy(m.bytes.data() + 2 * i, &h, 2);
      m.exact[i] = dtype == DType::kBF16 ? gqa::Bf16ToFloat(h) : gqa::F16ToFloat(h);
    }
  }
  m.view = MatrixView{m.bytes.data(), dtype, rows, cols, cols};
  return m;
}

// |got - want| <= tol * (1 + |want|) elementwise; reports the worst.
void ExpectClose(const std::vector<float>& got, const std::vector<double>& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double e = std::abs(got[i] - want[i]) / (1.0 + std::abs(want[i]));
    if (!(e <= worst)) {
      worst = e;
      at = i;
    }
  }
  EXPECT_LE(worst, tol) << what << ": worst at " << at << " got " << got[at] << " want " << want[at];
}

TEST(ConvertTest, KnownValues) {
  EXPECT_EQ(gqa::FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(gqa::FloatToF16(1.0f), 0x3c00);
  EXPECT_EQ(gqa::FloatToF16(65504.0f), 0x7bff);
  EXPECT_EQ(gqa::FloatToF16(1e6f), 0x7c00);
  EXPECT_EQ(gqa::FloatToF16(-2.0f), 0xc000);
  EXPECT_EQ(gqa::FloatToF16(5.960464477539063e-08f), 0x0001);  // smallest subnormal
  EXPECT_FLOAT_EQ(gqa::F16ToFloat(0x0001), 5.960464477539063e-08f);
  EXPECT_FLOAT_EQ(gqa::F16ToFloat(0x3555), 0.333251953125f);
  EXPECT_FLOAT_EQ(gqa::Bf16ToFloat(0xc040), -3.0f);
  // Round to nearest even: 1 + 2^-8 lies halfway between two bf16 values.
  EXPECT_EQ(gqa::FloatToBf16(1.00390625f), 0x3f80);
  EXPECT_EQ(gqa::FloatToBf16(1.01171875f), 0x3f82);
}

TEST(ConvertTest, F16RoundTripsEveryValue) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const uint16_t v = static_cast<uint16_t>(h);
    const float f = gqa::F16ToFloat(v);
    if (std::isnan(f)) continue;
    ASSERT_EQ(gqa::FloatToF16(f), v) << std::hex << h;
  }
}

TEST(ThreadPoolTest, CoversEveryTaskOnce) {
  ThreadPool pool(3);
  for (int64_t n : {1, 2, 3, 5, 17, 1000}) {
    std::vector<std::atomic<int>> hits(n);
    for (int rep = 0; rep < 50; ++rep) {
      pool.ParallelFor(n, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[i]++;
      });
    }
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 50) << n << " " << i;
  }
}

// The activations a matrix product really multiplies: on the AVX-512 BF16
// path for bf16 weights, hi + lo with hi = bf16(x), lo = bf16(x - hi) (the
// sum is exact in f32); otherwise x itself.
std::vector<float> ActivationsAsComputed(cpu::Isa isa, DType dtype, const std::vector<float>& x) {
  if (isa != cpu::Isa::kAvx512Bf16 || dtype != DType::kBF16) return x;
  std::vector<float> r(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const float hi = gqa::Bf16ToFloat(gqa::FloatToBf16(x[i]));
    r[i] = hi + gqa::Bf16ToFloat(gqa::FloatToBf16(x[i] - hi));
  }
  return r;
}

class MatMulTest : public ::testing::TestWithParam<DType> {};

TEST_P(MatMulTest, MatchesFloat64) {
  const DType dtype = GetParam();
  Rng rng(42 + int(dtype));
  CpuBackend backend(2);
  for (int n : {1, 2, 3, 4, 7}) {
    for (auto [rows, cols] : {std::pair{1, 1}, {9, 13}, {33, 64}, {67, 200}, {260, 301}}) {
      StoredMatrix w = Store(rng.Floats(size_t(rows) * cols, 0.5f), rows, cols, dtype);
      const std::vector<float> x = rng.Floats(size_t(n) * cols);
      const std::vector<float> bias = rng.Floats(rows);
      for (bool with_bias : {false, true}) {
        std::vector<float> y(size_t(n) * rows);
        backend.MatMul(x.data(), n, w.view, with_bias ? bias.data() : nullptr, y.data());
        // The AVX-512 BF16 path rounds the activations to bf16 first: the
        // reference takes the same rounded values.
        const std::vector<float> xr = ActivationsAsComputed(cpu::ActiveIsa(), dtype, x);
        std::vector<double> want(y.size());
        for (int t = 0; t < n; ++t) {
          for (int r = 0; r < rows; ++r) {
            double s = with_bias ? bias[r] : 0.0;
            for (int k = 0; k < cols; ++k) s += w.exact[size_t(r) * cols + k] * xr[size_t(t) * cols + k];
            want[size_t(t) * rows + r] = s;
          }
        }
        ExpectClose(y, want, 2e-5 * std::sqrt(double(cols)), "matmul");
      }
    }
  }
}

TEST_P(MatMulTest, StridedColumnSliceIsAView) {
  const DType dtype = GetParam();
  Rng rng(7);
  CpuBackend backend(2);
  const int rows = 19, cols = 45, c0 = 11, nc = 21, n = 3;
  StoredMatrix w = Store(rng.Floats(size_t(rows) * cols), rows, cols, dtype);
  const MatrixView slice = w.view.ColSlice(c0, nc).RowSlice(2, 15);
  const std::vector<float> x = rng.Floats(size_t(n) * nc);
  std::vector<float> y(size_t(n) * 15);
  backend.MatMul(x.data(), n, slice, nullptr, y.data());
  const std::vector<float> xr = ActivationsAsComputed(cpu::ActiveIsa(), dtype, x);
  std::vector<double> want(y.size());
  for (int t = 0; t < n; ++t)
    for (int r = 0; r < 15; ++r) {
      double s = 0;
      for (int k = 0; k < nc; ++k) s += w.exact[size_t(r + 2) * cols + c0 + k] * xr[t * nc + k];
      want[t * 15 + r] = s;
    }
  ExpectClose(y, want, 1e-5 * std::sqrt(double(nc)), "strided matmul");
}

// Every instruction set this CPU has, on every dtype and on shapes that hit
// each tile and tail, against float64 (for the bf16 dot product: of the
// split activations hi + lo), and within 2^-16 * sum |w x| (plus f32
// accumulation) of the exact product.
TEST(MatMulIsaTest, EveryAvailablePathMatchesFloat64) {
  int ran = 0;
  for (cpu::Isa isa : {cpu::Isa::kScalar, cpu::Isa::kAvx2, cpu::Isa::kAvx512, cpu::Isa::kAvx512Bf16}) {
    if (!cpu::IsaAvailable(isa)) {
      std::printf("note: %s is not available on this CPU: its path is not tested here\n", cpu::IsaName(isa));
      continue;
    }
    ++ran;
    for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
      Rng rng(3 + int(dtype));
      for (int n : {1, 3, 4, 5, 9}) {
        for (auto [rows, cols] : {std::pair{1, 1}, {8, 31}, {9, 32}, {13, 33}, {17, 100}, {40, 257}}) {
          StoredMatrix w = Store(rng.Floats(size_t(rows) * cols, 0.5f), rows, cols, dtype);
          const std::vector<float> x = rng.Floats(size_t(n) * cols);
          const std::vector<float> bias = rng.Floats(rows);
          std::vector<float> y(size_t(n) * rows);
          cpu::MatMulRowsWith(isa, x.data(), n, w.view, bias.data(), y.data(), 0, rows);
          const std::vector<float> xr = ActivationsAsComputed(isa, dtype, x);
          std::vector<double> want(y.size()), exact(y.size()), magnitude(y.size());
          for (int t = 0; t < n; ++t) {
            for (int r = 0; r < rows; ++r) {
              double s = bias[r], e = bias[r], m = 0;
              for (int k = 0; k < cols; ++k) {
                const double wv = w.exact[size_t(r) * cols + k];
                s += wv * xr[size_t(t) * cols + k];
                e += wv * x[size_t(t) * cols + k];
                m += std::abs(wv * x[size_t(t) * cols + k]);
              }
              want[size_t(t) * rows + r] = s;
              exact[size_t(t) * rows + r] = e;
              magnitude[size_t(t) * rows + r] = m;
            }
          }
          const std::string what = absl::StrCat(cpu::IsaName(isa), " ", DTypeName(dtype), " n=", n, " ", rows, "x", cols);
          ExpectClose(y, want, 2e-5 * std::sqrt(double(cols)), what);
          for (size_t i = 0; i < y.size(); ++i) {
            ASSERT_LE(std::abs(y[i] - exact[i]), std::ldexp(magnitude[i], -16) + 1e-5 * std::sqrt(double(cols)) * (1 + std::abs(exact[i])))
                << what << " element " << i;
          }
        }
      }
    }
  }
  EXPECT_GE(ran, 1);
}

// The blocked product (several tokens): token counts around the 6-token
// sliver, rows around the 16-row panel and the 192-row block, columns across
// 256-column blocks, row ranges that start and end mid-panel; against
// float64, and bit-identical whatever the thread count (each element is
// summed in a fixed order).
TEST(GemmTest, BlockedProductMatchesFloat64AndIgnoresThreadCount) {
  if (!cpu::UseGemm(cpu::Isa::kAvx2, cpu::kGemmMinTokens, DType::kF32)) {
    GTEST_SKIP() << "the blocked product needs AVX2/FMA/F16C, which this CPU lacks";
  }
  Rng rng(11);
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (int n : {cpu::kGemmMinTokens, cpu::kGemmMinTokens + 5, 37}) {
      for (auto [rows, cols] : {std::pair{16, 8}, {37, 255}, {200, 513}, {403, 300}}) {
        StoredMatrix w = Store(rng.Floats(size_t(rows) * cols, 0.5f), rows, cols, dtype);
        const std::vector<float> x = rng.Floats(size_t(n) * cols);
        const std::vector<float> bias = rng.Floats(rows);
        const std::string what = absl::StrCat(DTypeName(dtype), " n=", n, " ", rows, "x", cols);
        // Rows [r0, r1) only: the rest of y stays as it was (NaN).
        const int r0 = rows > 20 ? 5 : 0, r1 = rows > 20 ? rows - 3 : rows;
        std::vector<float> y(size_t(n) * rows, std::nanf(""));
        cpu::MatMulRowsWith(cpu::Isa::kAvx2, x.data(), n, w.view, bias.data(), y.data(), r0, r1);
        std::vector<float> got;
        std::vector<double> want;
        for (int t = 0; t < n; ++t) {
          for (int r = 0; r < rows; ++r) {
            const float v = y[size_t(t) * rows + r];
            if (r < r0 || r >= r1) {
              ASSERT_TRUE(std::isnan(v)) << what << ": row " << r << " outside the range was written";
              continue;
            }
            double s = bias[r];
            for (int k = 0; k < cols; ++k) s += w.exact[size_t(r) * cols + k] * x[size_t(t) * cols + k];
            got.push_back(v);
            want.push_back(s);
          }
        }
        ExpectClose(got, want, 2e-5 * std::sqrt(double(cols)), what);
        std::vector<std::vector<float>> by_threads;
        for (int threads : {1, 2, 3}) {
          CpuBackend backend(threads);
          std::vector<float> yb(size_t(n) * rows);
          backend.MatMul(x.data(), n, w.view, bias.data(), yb.data());
          by_threads.push_back(yb);
        }
        EXPECT_EQ(by_threads[0], by_threads[1]) << what;
        EXPECT_EQ(by_threads[0], by_threads[2]) << what;
        if (cpu::ActiveIsa() == cpu::Isa::kAvx2) {
          for (int t = 0; t < n; ++t)
            for (int r = r0; r < r1; ++r)
              ASSERT_EQ(by_threads[0][size_t(t) * rows + r], y[size_t(t) * rows + r]) << what << " t=" << t << " r=" << r;
        }
      }
    }
  }
}

// bf16 weights repacked into 16-row panels, in the layout of every ISA this
// CPU has (AVX2: kBf16Panels16; AVX-512 BF16: kBf16PairPanels16): token
// counts around the register tiles (6 and 12 tokens) and on both sides of
// the AVX2 switch to the blocked GEMM, rows around the 16-row panel, the
// 4-panel decode group and the GEMM's 192-row block, columns across passes,
// odd (a half-empty last pair) and leaving the split runs a tail, a strided
// column slice as the source; against float64 (of the activations as the
// ISA multiplies them), a row range bit-identical to the whole product,
// every element readable back (LoadRow), pair panels with f32 activations
// and (AVX-512 BF16) rounded ones; and for the active ISA, through
// CpuBackend::ImportWeightMatrix and MatMul, bit-identical for 1, 2 and 3
// threads.
TEST(PanelTest, RepackedBf16MatchesFloat64AndIgnoresThreadCount) {
  int ran = 0;
  for (cpu::Isa isa : {cpu::Isa::kAvx2, cpu::Isa::kAvx512, cpu::Isa::kAvx512Bf16}) {
    const MatrixLayout layout = cpu::WeightPanelLayout(isa, DType::kBF16);
    if (layout == MatrixLayout::kRowMajor) {
      std::printf("note: %s is not available on this CPU: its weight panels are not tested here\n", cpu::IsaName(isa));
      continue;
    }
    ++ran;
    // Pair panels take f32 activations, and rounded ones too on AVX-512
    // BF16 (the mode is ignored elsewhere).
    std::vector<cpu::Bf16Activations> modes = {cpu::Bf16Activations::kF32};
    if (isa == cpu::Isa::kAvx512Bf16) modes.push_back(cpu::Bf16Activations::kRounded);
    for (cpu::Bf16Activations mode : modes) {
      const bool rounded = mode == cpu::Bf16Activations::kRounded;
      const char* mode_name = rounded ? " rounded " : " ";
      Rng rng(23);
      constexpr int kFirstPanelRows = cpu::kPanelRows;
      for (auto [rows, cols] : {std::pair{1, 1}, {16, 8}, {17, 3}, {37, 255}, {64, 1030}, {79, 64}, {203, 77}}) {
        const int stored_cols = cols + 9, c0 = 5;  // the source is a column slice of a wider matrix
        StoredMatrix stored = Store(rng.Floats(size_t(rows) * stored_cols, 0.5f), rows, stored_cols, DType::kBF16);
        const MatrixView host = stored.view.ColSlice(c0, cols);
        const auto exact = [&](int r, int k) { return stored.exact[size_t(r) * stored_cols + c0 + k]; };
        const std::string shape = absl::StrCat(cpu::IsaName(isa), mode_name, rows, "x", cols);
        CpuBackend packer(1);
        absl::StatusOr<DeviceBuffer> buf = packer.Allocate(cpu::PanelBytes(layout, rows, cols));
        ASSERT_TRUE(buf.ok()) << buf.status();
        cpu::PackWeightPanels(layout, host, buf->as<uint16_t>(), 0, cpu::NumPanels(rows));
        const MatrixView w{buf->data(), DType::kBF16, rows, cols, cols, layout};
        std::vector<float> row(cols);
        for (int r = 0; r < rows; ++r) {
          cpu::LoadRow(w, r, row.data());
          for (int k = 0; k < cols; ++k) ASSERT_EQ(row[k], float(exact(r, k))) << shape << " " << r << "," << k;
        }
        const std::vector<int> counts = {1, 2, 3, 4, 5, 6, 7, 12, 13, 16, 24, 25, 37, cpu::kPanelGemmMinTokens - 1,
                                         cpu::kPanelGemmMinTokens + 5};
        std::vector<std::vector<float>> xs, ys;
        std::vector<std::vector<float>> biases;
        for (int n : counts) {
          const std::vector<float> x = rng.Floats(size_t(n) * cols), bias = rng.Floats(rows);
          const float* b = n % 2 ? bias.data() : nullptr;
          std::vector<float> y(size_t(n) * rows);
          cpu::MatMulRowsWith(isa, mode, x.data(), n, w, b, y.data(), 0, rows);
          std::vector<float> xr = x;
          if (rounded) {
            for (size_t i = 0; i < x.size(); ++i) xr[i] = gqa::Bf16ToFloat(gqa::FloatToBf16(x[i]));
          }
          std::vector<double> want(y.size());
          for (int t = 0; t < n; ++t) {
            for (int r = 0; r < rows; ++r) {
              double acc = b != nullptr ? bias[r] : 0.0;
              for (int k = 0; k < cols; ++k) acc += exact(r, k) * xr[size_t(t) * cols + k];
              want[size_t(t) * rows + r] = acc;
            }
          }
          ExpectClose(y, want, 2e-5 * std::sqrt(double(cols)), absl::StrCat(shape, " n=", n));
          if (rows > kFirstPanelRows) {
            // Rows from the second panel on: the same values, nothing else written.
            std::vector<float> part(y.size(), std::nanf(""));
            cpu::MatMulRowsWith(isa, mode, x.data(), n, w, b, part.data(), kFirstPanelRows, rows);
            for (int t = 0; t < n; ++t) {
              for (int r = 0; r < rows; ++r) {
                const float v = part[size_t(t) * rows + r];
                if (r < kFirstPanelRows) {
                  ASSERT_TRUE(std::isnan(v)) << shape << ": row " << r << " outside the range was written";
                } else {
                  ASSERT_EQ(v, y[size_t(t) * rows + r]) << shape << " n=" << n << " t=" << t << " r=" << r;
                }
              }
            }
          }
          xs.push_back(x);
          biases.push_back(bias);
          ys.push_back(y);
        }
        if (isa != cpu::ActiveIsa()) continue;
        for (int threads : {1, 2, 3}) {
          CpuBackend backend(threads);
          backend.set_weight_panels(true);
          backend.set_bf16_activations(rounded);
          if (layout == MatrixLayout::kBf16PairPanels16) ASSERT_EQ(backend.PairActivations(), mode) << shape;
          MatrixView imported;
          absl::StatusOr<DeviceBuffer> ibuf = backend.ImportWeightMatrix(host, &imported);
          ASSERT_TRUE(ibuf.ok()) << ibuf.status();
          ASSERT_EQ(imported.layout, layout) << shape;
          ASSERT_EQ(imported.rows, rows);
          ASSERT_EQ(imported.cols, cols);
          for (size_t i = 0; i < counts.size(); ++i) {
            const int n = counts[i];
            std::vector<float> y(size_t(n) * rows);
            backend.MatMul(xs[i].data(), n, imported, n % 2 ? biases[i].data() : nullptr, y.data());
            ASSERT_EQ(y, ys[i]) << shape << " n=" << n << " threads=" << threads;
          }
        }
      }
    }
  }
  if (ran == 0) GTEST_SKIP() << "this CPU has neither AVX2/FMA/F16C nor AVX-512 BF16: no weight panels";
}

// Only bf16 weights are repacked, and only when asked; the others stay views.
TEST(PanelTest, OtherWeightsStayRowMajorViews) {
  Rng rng(29);
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    StoredMatrix stored = Store(rng.Floats(40 * 24), 40, 24, dtype);
    for (bool panels : {false, true}) {
      CpuBackend backend(2);
      backend.set_weight_panels(panels);
      MatrixView w;
      absl::StatusOr<DeviceBuffer> buf = backend.ImportWeightMatrix(stored.view, &w);
      ASSERT_TRUE(buf.ok()) << buf.status();
      const MatrixLayout layout = cpu::WeightPanelLayout(cpu::ActiveIsa(), dtype);
      const bool repacked = panels && layout != MatrixLayout::kRowMajor;
      EXPECT_EQ(w.layout, repacked ? layout : MatrixLayout::kRowMajor) << DTypeName(dtype) << " " << panels;
      if (!repacked) {
        EXPECT_EQ(w.data, stored.view.data) << DTypeName(dtype);
      }
    }
  }
}

// SiLU's vectorised exponential over the whole range, saturation included.
TEST(ElementwiseTest, SiluMulAcrossTheRange) {
  CpuBackend backend(1);
  std::vector<float> g, u;
  for (int i = -1900; i <= 1900; ++i) {
    g.push_back(i * 0.05f + 0.0123f);
    u.push_back(1.0f + 0.001f * (i % 7));
  }
  g.push_back(0.0f);
  u.push_back(2.0f);
  std::vector<float> out(g.size());
  backend.SiluMul(g.data(), u.data(), int64_t(g.size()), out.data());
  std::vector<double> want(g.size());
  for (size_t i = 0; i < g.size(); ++i) want[i] = double(g[i]) / (1.0 + std::exp(-double(g[i]))) * u[i];
  ExpectClose(out, want, 1e-6, "silu*mul from -95 to 95");
}

INSTANTIATE_TEST_SUITE_P(DTypes, MatMulTest, ::testing::Values(DType::kF32, DType::kF16, DType::kBF16),
                         [](const ::testing::TestParamInfo<DType>& i) { return std::string(DTypeName(i.param)); });

TEST(ElementwiseTest, RmsNormSiluAddEmbeddingGather) {
  Rng rng(3);
  CpuBackend backend(2);
  const int n = 5, dim = 37;
  const std::vector<float> x = rng.Floats(n * dim, 3.0f), w = rng.Floats(dim);
  std::vector<float> out(n * dim);
  backend.RmsNorm(x.data(), w.data(), n, dim, 1e-5f, out.data());
  std::vector<double> want(n * dim);
  for (int r = 0; r < n; ++r) {
    double ss = 0;
    for (int i = 0; i < dim; ++i) ss += double(x[r * dim + i]) * x[r * dim + i];
    const double inv = 1.0 / std::sqrt(ss / dim + 1e-5);
    for (int i = 0; i < dim; ++i) want[r * dim + i] = x[r * dim + i] * inv * w[i];
  }
  ExpectClose(out, want, 1e-6, "rmsnorm");

  const std::vector<float> g = rng.Floats(n * dim, 4.0f), u = rng.Floats(n * dim);
  backend.SiluMul(g.data(), u.data(), n * dim, out.data());
  for (int i = 0; i < n * dim; ++i) want[i] = double(g[i]) / (1.0 + std::exp(-double(g[i]))) * u[i];
  ExpectClose(out, want, 1e-6, "silu*mul");

  std::vector<float> acc = x;
  backend.Add(acc.data(), g.data(), n * dim);
  for (int i = 0; i < n * dim; ++i) want[i] = double(x[i]) + g[i];
  ExpectClose(acc, want, 1e-7, "add");

  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    const int vocab = 23;
    StoredMatrix table = Store(rng.Floats(vocab * dim), vocab, dim, dt);
    const std::vector<int32_t> ids = {22, 0, 5, 5, 13};
    backend.Embedding(table.view, 0, ids.data(), n, out.data());
    for (int t = 0; t < n; ++t)
      for (int i = 0; i < dim; ++i) want[t * dim + i] = table.exact[size_t(ids[t]) * dim + i];
    ExpectClose(out, want, 0, "embedding");
    // A vocabulary slice [5, 14): rows outside it are zeros.
    backend.Embedding(table.view.RowSlice(5, 9), 5, ids.data(), n, out.data());
    for (int t = 0; t < n; ++t)
      for (int i = 0; i < dim; ++i)
        want[t * dim + i] = ids[t] >= 5 && ids[t] < 14 ? table.exact[size_t(ids[t]) * dim + i] : 0.0;
    ExpectClose(out, want, 0, "embedding slice");
  }

  const std::vector<int32_t> rows = {4, 1};
  std::vector<float> picked(2 * dim);
  backend.GatherRows(x.data(), rows.data(), 2, dim, picked.data());
  std::vector<double> want_rows;
  for (int r : rows)
    for (int i = 0; i < dim; ++i) want_rows.push_back(x[r * dim + i]);
  ExpectClose(picked, want_rows, 0, "gather");
}

TEST(RopeTest, RotateHalfMatchesFloat64) {
  Rng rng(5);
  CpuBackend backend(1);
  for (int head_dim : {2, 8, 22, 64}) {
    const int n = 6, heads = 3, half = head_dim / 2;
    const int64_t stride = heads * head_dim + 5;  // rows may be padded
    std::vector<float> x = rng.Floats(n * stride);
    const std::vector<int32_t> pos = {0, 1, 7, 100, 1023, 40000};
    std::vector<float> inv(half);
    for (int i = 0; i < half; ++i) inv[i] = 1.0f / std::pow(10000.0f, 2.0f * i / head_dim);
    std::vector<double> want(x.begin(), x.end());
    for (int t = 0; t < n; ++t)
      for (int h = 0; h < heads; ++h)
        for (int i = 0; i < half; ++i) {
          const double angle = double(float(pos[t]) * inv[i]);  // the f32 angle both sides use
          const size_t a = t * stride + h * head_dim + i, b = a + half;
          want[a] = x[a] * std::cos(angle) - x[b] * std::sin(angle);
          want[b] = x[b] * std::cos(angle) + x[a] * std::sin(angle);
        }
    backend.Rope(x.data(), n, heads, head_dim, stride, pos.data(), inv.data());
    ExpectClose(x, want, 2e-6, "rope");
  }
}

// Attention through a paged cache with shuffled block tables, several
// sequences of odd lengths, and prefill and decode tokens in one step.
struct AttentionCase {
  int q_heads, kv_heads, head_dim, window;
};

class AttentionTest : public ::testing::TestWithParam<AttentionCase> {};

// seq_lens: the last sequence is a prefill (every position queried), the
// others decode their last position.
void RunAttentionCase(const AttentionCase& c, int q_head_offset, int local_q_heads, uint64_t seed,
                      DType kv_dtype = DType::kF32, const std::vector<int>& seq_lens = {1, 54, 97, 13}) {
  Rng rng(seed);
  CpuBackend backend(2);
  const int block_size = 5, hd = c.head_dim;
  const int group = c.q_heads / c.kv_heads;
  // Local heads: local_q_heads query heads starting q_head_offset into KV group 0.
  const int local_kv = (q_head_offset + local_q_heads + group - 1) / group;
  const int longest = *std::max_element(seq_lens.begin(), seq_lens.end());
  const int max_blocks = (longest + block_size - 1) / block_size;
  const int num_blocks = int(seq_lens.size()) * max_blocks + 3;
  std::vector<int> free_blocks(num_blocks);
  std::iota(free_blocks.begin(), free_blocks.end(), 0);
  std::shuffle(free_blocks.begin(), free_blocks.end(), rng.gen());
  std::vector<int32_t> tables(seq_lens.size() * max_blocks, -1);
  for (size_t s = 0, next = 0; s < seq_lens.size(); ++s)
    for (int b = 0; b < (seq_lens[s] + block_size - 1) / block_size; ++b) tables[s * max_blocks + b] = free_blocks[next++];

  // Fill the cache for all positions; query tokens: every position of seq 3
  // (a prefill) and the last position of each other sequence (decodes).
  KvCacheLayout layout{num_blocks, block_size, local_kv, hd, kv_dtype};
  std::vector<uint8_t> k_cache(layout.Bytes()), v_cache(layout.Bytes());
  std::vector<std::vector<float>> keys(seq_lens.size()), vals(seq_lens.size());
  std::vector<int32_t> token_seq, token_pos, slots;
  for (size_t s = 0; s < seq_lens.size(); ++s) {
    keys[s] = rng.Floats(size_t(seq_lens[s]) * local_kv * hd);
    vals[s] = rng.Floats(size_t(seq_lens[s]) * local_kv * hd);
    if (kv_dtype == DType::kBF16) {  // the reference sees what the cache holds
      for (float& x : keys[s]) x = gqa::Bf16ToFloat(gqa::FloatToBf16(x));
      for (float& x : vals[s]) x = gqa::Bf16ToFloat(gqa::FloatToBf16(x));
    }
    for (int p = 0; p < seq_lens[s]; ++p) {
      const int64_t slot = int64_t(tables[s * max_blocks + p / block_size]) * block_size + p % block_size;
      // Stored through WriteKv, the op under test for the cache format.
      AttentionMeta w;
      w.num_tokens = 1;
      const int32_t slot32 = int32_t(slot);
      w.slot_mapping = &slot32;
      backend.WriteKv(keys[s].data() + size_t(p) * local_kv * hd, vals[s].data() + size_t(p) * local_kv * hd, w,
                      layout, k_cache.data(), v_cache.data());
      if (s == seq_lens.size() - 1 || p == seq_lens[s] - 1) {
        token_seq.push_back(int(s));
        token_pos.push_back(p);
        slots.push_back(int32_t(slot));
      }
    }
  }
  const int n = int(token_seq.size());
  AttentionMeta meta;
  meta.num_tokens = n;
  meta.token_seq = token_seq.data();
  meta.token_pos = token_pos.data();
  meta.slot_mapping = slots.data();
  meta.block_tables = tables.data();
  meta.max_blocks_per_seq = max_blocks;
  AttentionShape shape;
  shape.num_q_heads = local_q_heads;
  shape.num_kv_heads = local_kv;
  shape.group_size = group;
  shape.q_head_offset = q_head_offset;
  shape.head_dim = hd;
  shape.scale = 1.0f / std::sqrt(float(hd));
  shape.sliding_window = c.window;
  const std::vector<float> q = rng.Floats(size_t(n) * local_q_heads * hd);
  std::vector<float> out(q.size());
  const std::unique_ptr<AttentionPlan> plan = backend.PlanAttention(token_seq.data(), token_pos.data(), n, shape, layout);
  backend.Attention(q.data(), meta, layout, k_cache.data(), v_cache.data(), shape, *plan, out.data());

  std::vector<double> want(out.size());
  for (int t = 0; t < n; ++t) {
    const int s = token_seq[t], pos = token_pos[t];
    const int start = c.window > 0 ? std::max(0, pos - c.window + 1) : 0;
    for (int h = 0; h < local_q_heads; ++h) {
      const int g = (q_head_offset + h) / group;
      std::vector<double> sc;
      for (int j = start; j <= pos; ++j) {
        double d = 0;
        for (int i = 0; i < hd; ++i) d += double(q[(size_t(t) * local_q_heads + h) * hd + i]) * keys[s][(size_t(j) * local_kv + g) * hd + i];
        sc.push_back(d / std::sqrt(double(hd)));
      }
      const double mx = *std::max_element(sc.begin(), sc.end());
      double sum = 0;
      for (double& e : sc) sum += (e = std::exp(e - mx));
      for (int i = 0; i < hd; ++i) {
        double acc = 0;
        for (int j = start; j <= pos; ++j) acc += sc[j - start] / sum * vals[s][(size_t(j) * local_kv + g) * hd + i];
        want[(size_t(t) * local_q_heads + h) * hd + i] = acc;
      }
    }
  }
  ExpectClose(out, want, 2e-6, "attention");
}

TEST_P(AttentionTest, PagedMatchesFloat64) {
  const AttentionCase& c = GetParam();
  RunAttentionCase(c, 0, c.q_heads, 11);
}

TEST_P(AttentionTest, Bf16CacheMatchesFloat64) {
  const AttentionCase& c = GetParam();
  RunAttentionCase(c, 0, c.q_heads, 12, DType::kBF16);
}

// A decode context longer than kContextChunk (split into chunks, merged by
// log-sum-exp), with and without a window that still spans two chunks, and a
// prefill of several query tiles.
TEST_P(AttentionTest, LongDecodeAndMultiTilePrefillMatchFloat64) {
  AttentionCase c = GetParam();
  const std::vector<int> lens = {1, cpu::kContextChunk * 2 + 77, 54, 2 * cpu::kQueryTile + 9};
  RunAttentionCase(c, 0, c.q_heads, 14, DType::kF32, lens);
  if (c.window == 0) c.window = cpu::kContextChunk + 100;
  RunAttentionCase(c, 0, c.q_heads, 15, DType::kBF16, lens);
}

// A tensor-parallel rank whose query heads start inside a group and straddle
// groups (e.g. Qwen2-7B's 28/4 heads over 8 ranks).
TEST_P(AttentionTest, StraddlingShardMatchesFloat64) {
  const AttentionCase& c = GetParam();
  const int group = c.q_heads / c.kv_heads;
  if (group == 1 || c.q_heads < 3) GTEST_SKIP() << "no straddling possible with group size 1";
  RunAttentionCase(c, group - 1, std::min(c.q_heads - group + 1, group + 1), 13);
}

INSTANTIATE_TEST_SUITE_P(
    Groups, AttentionTest,
    ::testing::Values(AttentionCase{4, 4, 16, 0},   // MHA
                      AttentionCase{6, 6, 10, 0},   // MHA, odd head_dim
                      AttentionCase{8, 4, 16, 0},   // group 2
                      AttentionCase{8, 2, 24, 0},   // group 4
                      AttentionCase{16, 2, 8, 0},   // group 8
                      AttentionCase{8, 1, 32, 0},   // MQA
                      AttentionCase{28, 4, 12, 0},  // group 7 (Qwen2-7B ratio)
                      AttentionCase{8, 2, 16, 7}),  // sliding window
    [](const ::testing::TestParamInfo<AttentionCase>& i) {
      return absl::StrCat("q", i.param.q_heads, "_kv", i.param.kv_heads, "_d", i.param.head_dim, "_w",
                          i.param.window);
    });

TEST(WriteKvTest, StoresRowsAtSlots) {
  CpuBackend backend(1);
  KvCacheLayout layout{3, 4, 2, 3};
  std::vector<float> kc(layout.Elements(), -1), vc(layout.Elements(), -1);
  const int n = 2, row = 6;
  std::vector<float> k(n * row), v(n * row);
  std::iota(k.begin(), k.end(), 0.0f);
  std::iota(v.begin(), v.end(), 100.0f);
  const std::vector<int32_t> slots = {9, 2};
  AttentionMeta meta;
  meta.num_tokens = n;
  meta.slot_mapping = slots.data();
  backend.WriteKv(k.data(), v.data(), meta, layout, kc.data(), vc.data());
  for (int t = 0; t < n; ++t)
    for (int i = 0; i < row; ++i) {
      EXPECT_EQ(kc[slots[t] * row + i], k[t * row + i]);
      EXPECT_EQ(vc[slots[t] * row + i], v[t * row + i]);
    }
  EXPECT_EQ(std::count(kc.begin(), kc.end(), -1.0f), layout.Elements() - n * row);
}

}  // namespace
}  // namespace gqa
