#include "bench/membw.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstring>

namespace gqa {

double MonotonicSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

absl::StatusOr<double> DeviceCopyBytesPerSecond(Backend& b, const DeviceBuffer& src, const DeviceBuffer& dst, int iters) {
  b.CopyDeviceToDevice(dst.data(), src.data(), src.bytes());
  RETURN_IF_ERROR(b.Synchronize());
  std::vector<double> rates;
  for (int i = 0; i < iters; ++i) {
    const double t0 = MonotonicSeconds();
    b.CopyDeviceToDevice(dst.data(), src.data(), src.bytes());
    RETURN_IF_ERROR(b.Synchronize());
    rates.push_back(2.0 * double(src.bytes()) / (MonotonicSeconds() - t0));
  }
  return Median(rates);
}

BandwidthProbe::BandwidthProbe(ThreadPool* pool, size_t bytes)
    : pool_(pool), src_(bytes / sizeof(float), 1.0f), dst_(bytes / sizeof(float), 0.0f) {}

double BandwidthProbe::CopyBytesPerSecond() {
  const int64_t n = static_cast<int64_t>(src_.size());
  const double t0 = MonotonicSeconds();
  pool_->ParallelFor(pool_->size(), [&](int64_t b, int64_t e) {
    const int64_t lo = n * b / pool_->size(), hi = n * e / pool_->size();
    std::memcpy(dst_.data() + lo, src_.data() + lo, (hi - lo) * sizeof(float));
  });
  const double t = MonotonicSeconds() - t0;
  return 2.0 * n * sizeof(float) / t;
}

__attribute__((target("avx2"))) static float SumAvx2(const float* p, int64_t n) {
  // Eight independent accumulators: the sweep is limited by memory, not by
  // the latency of the adds.
  __m256 acc[8];
  for (__m256& a : acc) a = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    for (int k = 0; k < 8; ++k) acc[k] = _mm256_add_ps(acc[k], _mm256_loadu_ps(p + i + 8 * k));
  }
  for (int k = 1; k < 8; ++k) acc[0] = _mm256_add_ps(acc[0], acc[k]);
  float out[8];
  _mm256_storeu_ps(out, acc[0]);
  float s = 0;
  for (float v : out) s += v;
  for (; i < n; ++i) s += p[i];
  return s;
}

double BandwidthProbe::ReadBytesPerSecond() {
  const int64_t n = static_cast<int64_t>(src_.size());
  std::vector<float> sums(pool_->size());
  const double t0 = MonotonicSeconds();
  pool_->ParallelFor(pool_->size(), [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      const int64_t lo = n * c / pool_->size(), hi = n * (c + 1) / pool_->size();
      sums[c] = SumAvx2(src_.data() + lo, hi - lo);
    }
  });
  const double t = MonotonicSeconds() - t0;
  volatile float sink = sums[0];  // keep the sweep
  (void)sink;
  return double(n) * sizeof(float) / t;
}

}  // namespace gqa
