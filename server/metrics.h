// Prometheus text-format metrics: counters, gauges read at scrape time, and
// histograms with fixed buckets. Thread-safe.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace gqa {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void Observe(double value);
  void Render(const std::string& name, std::string* out) const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative); last is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  // Registration happens once at start-up; the returned objects live as long as Metrics.
  std::atomic<int64_t>* Counter(const std::string& name, const std::string& help);
  void Gauge(const std::string& name, const std::string& help, std::function<double()> read);
  // A counter kept elsewhere (e.g. by the engine), read at scrape time.
  void CounterRead(const std::string& name, const std::string& help, std::function<double()> read);
  Histogram* AddHistogram(const std::string& name, const std::string& help, std::vector<double> bounds);

  std::string Render() const;

 private:
  void AddRead(const std::string& name, const std::string& help, const char* type, std::function<double()> read);
  struct Entry {
    std::string name, help, type;
    std::unique_ptr<std::atomic<int64_t>> counter;
    std::function<double()> gauge;
    std::unique_ptr<Histogram> histogram;
  };
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Entry>> entries_;
};

}  // namespace gqa
