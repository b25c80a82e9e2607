#include "server/metrics.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace gqa {

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::Observe(double value) {
  const size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_[i];
  sum_ += value;
  ++count_;
}

void Histogram::Render(const std::string& name, std::string* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t cum = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cum += counts_[i];
    absl::StrAppend(out, name, "_bucket{le=\"", bounds_[i], "\"} ", cum, "\n");
  }
  absl::StrAppend(out, name, "_bucket{le=\"+Inf\"} ", count_, "\n", name, "_sum ", sum_, "\n", name, "_count ",
                  count_, "\n");
}

std::atomic<int64_t>* Metrics::Counter(const std::string& name, const std::string& help) {
  auto e = std::make_unique<Entry>();
  e->name = name;
  e->help = help;
  e->type = "counter";
  e->counter = std::make_unique<std::atomic<int64_t>>(0);
  std::atomic<int64_t>* p = e->counter.get();
  std::lock_guard<std::mutex> lock(mu_);
  entries_.push_back(std::move(e));
  return p;
}

void Metrics::Gauge(const std::string& name, const std::string& help, std::function<double()> read) {
  AddRead(name, help, "gauge", std::move(read));
}

void Metrics::CounterRead(const std::string& name, const std::string& help, std::function<double()> read) {
  AddRead(name, help, "counter", std::move(read));
}

void Metrics::AddRead(const std::string& name, const std::string& help, const char* type, std::function<double()> read) {
  auto e = std::make_unique<Entry>();
  e->name = name;
  e->help = help;
  e->type = type;
  e->gauge = std::move(read);
  std::lock_guard<std::mutex> lock(mu_);
  entries_.push_back(std::move(e));
}

Histogram* Metrics::AddHistogram(const std::string& name, const std::string& help, std::vector<double> bounds) {
  auto e = std::make_unique<Entry>();
  e->name = name;
  e->help = help;
  e->type = "histogram";
  e->histogram = std::make_unique<Histogram>(std::move(bounds));
  Histogram* p = e->histogram.get();
  std::lock_guard<std::mutex> lock(mu_);
  entries_.push_back(std::move(e));
  return p;
}

std::string Metrics::Render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& e : entries_) {
    absl::StrAppend(&out, "# HELP ", e->name, " ", e->help, "\n# TYPE ", e->name, " ", e->type, "\n");
    if (e->counter) absl::StrAppend(&out, e->name, " ", e->counter->load(), "\n");
    if (e->gauge) absl::StrAppend(&out, e->name, " ", e->gauge(), "\n");
    if (e->histogram) e->histogram->Render(e->name, &out);
  }
  return out;
}

}  // namespace gqa
