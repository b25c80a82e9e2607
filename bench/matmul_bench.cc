#include "bench/matmul_bench.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "nlohmann/json.hpp"
#include "bench/membw.h"
#if defined(GQA_HAVE_ONEDNN)
#include "bench/onednn_matmul.h"
#endif

namespace gqa {

absl::Status RunMatMulBench(const Flags& f) {
  ASSIGN_OR_RETURN(int64_t rows, f.GetInt("mm-rows"));
  ASSIGN_OR_RETURN(int64_t cols, f.GetInt("mm-cols"));
  ASSIGN_OR_RETURN(int64_t threads, f.GetInt("threads"));
  ASSIGN_OR_RETURN(int64_t samples, f.GetInt("samples"));
  if (rows < 1 || cols < 1 || samples < 1) return absl::InvalidArgumentError("--mm-rows, --mm-cols and --samples must be positive");
  std::vector<int> tokens;
  for (absl::string_view s : absl::StrSplit(f.Get("mm-tokens"), ',')) {
    int n = 0;
    if (!absl::SimpleAtoi(s, &n) || n < 1 || n > 8192) return absl::InvalidArgumentError("--mm-tokens: counts in [1, 8192]");
    tokens.push_back(n);
  }
  const std::string dtype_name = f.Get("dtype");
  const DType dtype = dtype_name == "f32" ? DType::kF32 : dtype_name == "f16" ? DType::kF16 : DType::kBF16;
  CpuBackend backend(threads > 0 ? int(threads) : int(std::thread::hardware_concurrency()));
  std::mt19937 gen(1);
  std::normal_distribution<float> d(0.0f, 0.05f);
  std::vector<uint8_t> wbytes(size_t(rows) * cols * DTypeSize(dtype));
  for (int64_t i = 0; i < rows * cols; ++i) {
    const float v = d(gen);
    if (dtype == DType::kF32) {
      std::memcpy(wbytes.data() + 4 * i, &v, 4);
    } else {
      const uint16_t h = dtype == DType::kBF16 ? gqa::FloatToBf16(v) : gqa::FloatToF16(v);
      std::memcpy(wbytes.data() + 2 * i, &h, 2);
    }
  }
  // The stored row-major matrix, and the backend's own layout for MatMul
  // weights where it has one (bf16 panels): both timed, samples interleaved.
  const MatrixView stored{wbytes.data(), dtype, rows, cols, cols};
  MatrixView imported;
  ASSIGN_OR_RETURN(DeviceBuffer imported_buf, backend.ImportWeightMatrix(stored, &imported));
  // Pair panels (AVX-512 BF16) are timed with rounded activations (the
  // default) and f32 ones (GQA_CPU_BF16_ACTIVATIONS=0).
  // Where gqa-bench was built with oneDNN (libdnnl-dev), its bf16 matmul
  // is timed beside them on the same stored weights.
  struct Layout {
    std::string name;
    MatrixView view;
    bool rounded = false;
    std::function<void(int)> run = nullptr;  // instead of backend.MatMul
  };
  std::vector<Layout> layouts = {{"row-major", stored}};
  if (imported.layout == MatrixLayout::kBf16Panels16) layouts.push_back({"panels", imported});
  if (imported.layout == MatrixLayout::kBf16PairPanels16) {
    layouts.push_back({"pair-panels", imported, true});
    layouts.push_back({"pair-panels/f32-act", imported, false});
  }
  const int max_n = *std::max_element(tokens.begin(), tokens.end());
  std::vector<float> x(size_t(max_n) * cols), y(size_t(max_n) * rows);
  for (float& v : x) v = d(gen);
  std::string onednn = "not built (install libdnnl-dev and rebuild)";
#if defined(GQA_HAVE_ONEDNN)
  std::unique_ptr<OneDnnMatMul> dnnl;
  if (dtype == DType::kBF16) {
    ASSIGN_OR_RETURN(dnnl, OneDnnMatMul::Create(reinterpret_cast<const uint16_t*>(wbytes.data()), rows, cols,
                                                backend.num_threads()));
    for (int n : tokens) RETURN_IF_ERROR(dnnl->Prepare(n));
    // Same product? oneDNN against the backend with rounded activations (the
    // same bf16 inputs; only the order of the f32 sums differs).
    const int n0 = tokens[0];
    std::vector<float> ours(size_t(n0) * rows);
    const bool was = backend.bf16_activations();
    backend.set_bf16_activations(true);
    backend.MatMul(x.data(), n0, imported, nullptr, ours.data());
    backend.set_bf16_activations(was);
    dnnl->Run(x.data(), n0, y.data());
    double diff = 0, scale = 0;
    for (size_t i = 0; i < ours.size(); ++i) {
      diff = std::max(diff, double(std::abs(ours[i] - y[i])));
      scale = std::max(scale, double(std::abs(ours[i])));
    }
    onednn = absl::StrCat(dnnl->Describe(), ", ", n0, " tokens: largest difference from the backend's product ",
                          "(activations rounded where it has pair panels) ", diff / scale, " of the largest output");
    layouts.push_back({"onednn-bf16", stored, false, [&](int n) { dnnl->Run(x.data(), n, y.data()); }});
  } else {
    onednn = "bf16 weights only";
  }
#endif
  std::fprintf(stderr, "matmul: %s; oneDNN: %s\n", backend.Name().c_str(), onednn.c_str());
  const auto run = [&](const Layout& l, int n) {
    if (l.run) return l.run(n);
    backend.set_bf16_activations(l.rounded);
    backend.MatMul(x.data(), n, l.view, nullptr, y.data());
  };
  nlohmann::json out = nlohmann::json::array();
  for (int n : tokens) {
    // Repeat each sample until it lasts ~50 ms.
    const double flop = 2.0 * n * rows * cols;
    std::vector<int> reps(layouts.size(), 1);
    for (size_t l = 0; l < layouts.size(); ++l) {
      run(layouts[l], n);  // warm-up
      for (;;) {
        const double t0 = MonotonicSeconds();
        for (int i = 0; i < reps[l]; ++i) run(layouts[l], n);
        if (MonotonicSeconds() - t0 > 0.05 || reps[l] > (1 << 20)) break;
        reps[l] *= 2;
      }
    }
    std::vector<std::vector<double>> gflops(layouts.size());
    for (int s = 0; s < samples; ++s) {
      for (size_t l = 0; l < layouts.size(); ++l) {
        const double t0 = MonotonicSeconds();
        for (int i = 0; i < reps[l]; ++i) run(layouts[l], n);
        gflops[l].push_back(flop * reps[l] / (MonotonicSeconds() - t0) / 1e9);
      }
    }
    for (size_t l = 0; l < layouts.size(); ++l) {
      const MatrixLayout lay = layouts[l].view.layout;
      const bool gemm = !layouts[l].run && lay != MatrixLayout::kBf16PairPanels16 &&
                        cpu::UseGemm(cpu::ActiveIsa(), n, dtype) &&
                        (lay == MatrixLayout::kRowMajor || n >= cpu::kPanelGemmMinTokens);
      const double med = Median(gflops[l]), best = *std::max_element(gflops[l].begin(), gflops[l].end());
      const double weight_gbps = med / (2.0 * n) * double(DTypeSize(dtype));  // weight bytes streamed per second
      out.push_back({{"tokens", n}, {"rows", rows}, {"cols", cols}, {"dtype", dtype_name},
                     {"layout", layouts[l].name}, {"bf16_activations", layouts[l].rounded}, {"gemm", gemm},
                     {"GFLOPs", {{"median", med}, {"best", best}}}, {"weight_GBps_median", weight_gbps}});
      std::fprintf(stderr, "matmul %lldx%lld %s %-9s %4d tokens: %7.1f GFLOP/s median (%7.1f best)%s\n",
                   (long long)rows, (long long)cols, dtype_name.c_str(), layouts[l].name.c_str(), n, med, best,
                   gemm ? ", blocked GEMM" : "");
    }
  }
  nlohmann::json j;
  j["backend"] = backend.Name();
  j["onednn"] = onednn;
  j["results"] = out;
  std::printf("%s\n", j.dump(2).c_str());
  return absl::OkStatus();
}

}  // namespace gqa
