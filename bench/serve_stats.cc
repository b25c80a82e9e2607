// Per-request records to per-level summaries; Prometheus text parsing.
#include "bench/serve_stats.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace gqa {

const std::vector<std::string>& ErrorKinds() {
  static const std::vector<std::string> kinds = {"http_429", "http_4xx", "http_5xx", "timeout", "disconnect"};
  return kinds;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double rank = std::clamp(p, 0.0, 100.0) / 100.0 * double(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  const double frac = rank - double(lo);
  return v[lo] + (v[hi] - v[lo]) * frac;
}

Distribution Summarize(const std::vector<double>& v) {
  Distribution d;
  d.count = static_cast<int64_t>(v.size());
  if (v.empty()) return d;
  double sum = 0;
  for (double x : v) sum += x;
  d.mean = sum / double(v.size());
  d.p50 = Percentile(v, 50);
  d.p90 = Percentile(v, 90);
  d.p99 = Percentile(v, 99);
  d.min = *std::min_element(v.begin(), v.end());
  d.max = *std::max_element(v.begin(), v.end());
  return d;
}

nlohmann::json DistributionJson(const Distribution& d, double scale) {
  return {{"count", d.count}, {"mean", d.mean * scale}, {"p50", d.p50 * scale}, {"p90", d.p90 * scale},
          {"p99", d.p99 * scale}, {"min", d.min * scale}, {"max", d.max * scale}};
}

std::map<std::string, double> ParsePrometheus(const std::string& text) {
  std::map<std::string, double> out;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    // "name value" or "name value timestamp"; labelled samples ("name{...}")
    // are skipped: the gauges read here have none.
    std::vector<absl::string_view> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (parts.size() < 2 || absl::StrContains(parts[0], '{')) continue;
    double v;
    if (absl::SimpleAtod(parts[1], &v)) out[std::string(parts[0])] = v;
  }
  return out;
}

std::optional<MetricsSample> SampleFromPrometheus(const std::string& text) {
  const std::map<std::string, double> m = ParsePrometheus(text);
  auto get = [&](const char* name, double* dst) {
    auto it = m.find(name);
    if (it == m.end()) return false;
    *dst = it->second;
    return true;
  };
  MetricsSample s;
  if (!get("gqa_num_requests_running", &s.running) || !get("gqa_num_requests_waiting", &s.waiting)) return std::nullopt;
  get("gqa_kv_cache_usage_ratio", &s.kv_usage);
  get("gqa_num_preemptions_total", &s.preemptions_total);
  double queries = 0, hits = 0;
  if (get("gqa_prefix_cache_queries_total", &queries) && get("gqa_prefix_cache_hits_total", &hits)) {
    s.prefix_queries_total = queries;
    s.prefix_hits_total = hits;
  }
  return s;
}

ServerSamples SummarizeServer(const std::vector<MetricsSample>& s) {
  ServerSamples out;
  out.samples = static_cast<int64_t>(s.size());
  if (s.empty()) return out;
  for (const MetricsSample& x : s) {
    out.running_mean += x.running;
    out.waiting_mean += x.waiting;
    out.kv_usage_mean += x.kv_usage;
    out.running_max = std::max(out.running_max, x.running);
    out.waiting_max = std::max(out.waiting_max, x.waiting);
    out.kv_usage_max = std::max(out.kv_usage_max, x.kv_usage);
  }
  out.running_mean /= double(s.size());
  out.waiting_mean /= double(s.size());
  out.kv_usage_mean /= double(s.size());
  out.preemptions = s.back().preemptions_total - s.front().preemptions_total;
  if (s.front().prefix_queries_total && s.back().prefix_queries_total) {
    const double queries = *s.back().prefix_queries_total - *s.front().prefix_queries_total;
    const double hits = *s.back().prefix_hits_total - *s.front().prefix_hits_total;
    if (queries > 0) out.prefix_hit_rate = hits / queries;
  }
  return out;
}

LevelResult SummarizeLevel(const std::string& kind, double value, const std::vector<RequestRecord>& records,
                           const Slo& slo) {
  LevelResult r;
  r.kind = kind;
  r.value = value;
  for (const std::string& k : ErrorKinds()) r.errors_by_kind[k] = 0;
  double first = std::numeric_limits<double>::infinity(), last = -std::numeric_limits<double>::infinity();
  std::vector<double> ttft, tpot, itl, e2e;
  for (const RequestRecord& q : records) {
    if (q.warmup) continue;
    ++r.sent;
    first = std::min(first, q.start_s);
    last = std::max(last, q.start_s + q.e2e_s);
    if (!q.ok) {
      ++r.errors;
      ++r.errors_by_kind[q.error_kind];
      continue;
    }
    ++r.completed;
    r.prompt_tokens += q.prompt_tokens;
    r.output_tokens += q.output_tokens;
    r.cached_tokens += q.cached_tokens;
    ttft.push_back(q.ttft_s);
    e2e.push_back(q.e2e_s);
    itl.insert(itl.end(), q.itl_s.begin(), q.itl_s.end());
    // Time per output token after the first; undefined for one token.
    std::optional<double> q_tpot;
    if (q.output_tokens > 1) {
      q_tpot = (q.e2e_s - q.ttft_s) / double(q.output_tokens - 1);
      tpot.push_back(*q_tpot);
    }
    const bool ttft_ok = !slo.ttft_ms || q.ttft_s * 1e3 <= *slo.ttft_ms;
    const bool tpot_ok = !slo.tpot_ms || !q_tpot || *q_tpot * 1e3 <= *slo.tpot_ms;
    if (ttft_ok && tpot_ok) ++r.good;
  }
  r.duration_s = r.sent > 0 ? last - first : 0;
  if (r.duration_s > 0) {
    r.request_throughput = double(r.completed) / r.duration_s;
    r.output_throughput = double(r.output_tokens) / r.duration_s;
    r.total_throughput = double(r.prompt_tokens + r.output_tokens) / r.duration_s;
    if (slo.ttft_ms || slo.tpot_ms) r.goodput = double(r.good) / r.duration_s;
  }
  r.ttft = Summarize(ttft);
  r.tpot = Summarize(tpot);
  r.itl = Summarize(itl);
  r.e2e = Summarize(e2e);
  return r;
}

namespace {

// A level's value: clients as an integer, a rate as a number or "inf".
nlohmann::json LevelValue(const LevelResult& r) {
  if (r.kind == "concurrency") return static_cast<int64_t>(r.value);
  if (std::isinf(r.value)) return "inf";
  return r.value;
}

std::string LevelLabel(const LevelResult& r) {
  if (r.kind == "concurrency") return absl::StrCat("c=", static_cast<int64_t>(r.value));
  if (std::isinf(r.value)) return "rate=inf";
  return absl::StrFormat("rate=%g", r.value);
}

}  // namespace

nlohmann::json LevelJson(const LevelResult& r) {
  nlohmann::json j;
  j[r.kind] = LevelValue(r);
  j["duration_s"] = r.duration_s;
  j["sent"] = r.sent;
  j["completed"] = r.completed;
  j["errors"] = r.errors;
  j["errors_by_kind"] = r.errors_by_kind;
  j["prompt_tokens"] = r.prompt_tokens;
  j["output_tokens"] = r.output_tokens;
  j["request_throughput"] = r.request_throughput;
  j["output_throughput"] = r.output_throughput;
  j["total_token_throughput"] = r.total_throughput;
  j["cached_prompt_tokens"] = r.cached_tokens;
  j["prompt_cache_hit_rate"] = r.prompt_tokens > 0 ? double(r.cached_tokens) / double(r.prompt_tokens) : 0.0;
  j["computed_prompt_tokens"] = r.prompt_tokens - r.cached_tokens;
  j["ttft_ms"] = DistributionJson(r.ttft, 1e3);
  j["tpot_ms"] = DistributionJson(r.tpot, 1e3);
  j["itl_ms"] = DistributionJson(r.itl, 1e3);
  j["e2e_latency_ms"] = DistributionJson(r.e2e, 1e3);
  j["goodput"] = r.goodput ? nlohmann::json(*r.goodput) : nlohmann::json(nullptr);
  j["good_requests"] = r.goodput ? nlohmann::json(r.good) : nlohmann::json(nullptr);
  if (r.server) {
    const ServerSamples& s = *r.server;
    j["server"] = {{"samples", s.samples},          {"running_mean", s.running_mean}, {"running_max", s.running_max},
                   {"waiting_mean", s.waiting_mean}, {"waiting_max", s.waiting_max},   {"kv_usage_mean", s.kv_usage_mean},
                   {"kv_usage_max", s.kv_usage_max}, {"preemptions", s.preemptions},
                   {"prefix_cache_hit_rate", s.prefix_hit_rate ? nlohmann::json(*s.prefix_hit_rate) : nlohmann::json(nullptr)}};
  } else {
    j["server"] = nullptr;
  }
  return j;
}

std::string CsvHeader() {
  std::string h =
      "label,kind,value,duration_s,sent,completed,errors,prompt_tokens,output_tokens,request_throughput,"
      "output_throughput,total_token_throughput,ttft_mean_ms,ttft_p50_ms,ttft_p90_ms,ttft_p99_ms,tpot_mean_ms,"
      "tpot_p50_ms,tpot_p90_ms,tpot_p99_ms,itl_p50_ms,itl_p99_ms,e2e_mean_ms,e2e_p50_ms,e2e_p99_ms,goodput";
  for (const std::string& k : ErrorKinds()) absl::StrAppend(&h, ",errors_", k);
  absl::StrAppend(&h, ",server_running_max,server_waiting_max,server_kv_usage_max,server_preemptions,"
                      "server_prefix_cache_hit_rate\n");
  return h;
}

std::string CsvRow(const LevelResult& r, const std::string& label) {
  std::string s = absl::StrFormat(
      "%s,%s,%g,%.4f,%d,%d,%d,%d,%d,%.4f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%s",
      label, r.kind, r.value, r.duration_s, r.sent, r.completed, r.errors, r.prompt_tokens, r.output_tokens,
      r.request_throughput, r.output_throughput, r.total_throughput, 1e3 * r.ttft.mean, 1e3 * r.ttft.p50,
      1e3 * r.ttft.p90, 1e3 * r.ttft.p99, 1e3 * r.tpot.mean, 1e3 * r.tpot.p50, 1e3 * r.tpot.p90, 1e3 * r.tpot.p99,
      1e3 * r.itl.p50, 1e3 * r.itl.p99, 1e3 * r.e2e.mean, 1e3 * r.e2e.p50, 1e3 * r.e2e.p99,
      r.goodput ? absl::StrFormat("%.4f", *r.goodput) : "");
  for (const std::string& k : ErrorKinds()) absl::StrAppend(&s, ",", r.errors_by_kind.at(k));
  if (r.server) {
    absl::StrAppend(&s, absl::StrFormat(",%g,%g,%.4f,%g,%s\n", r.server->running_max, r.server->waiting_max,
                                        r.server->kv_usage_max, r.server->preemptions,
                                        r.server->prefix_hit_rate ? absl::StrFormat("%.4f", *r.server->prefix_hit_rate)
                                                                  : std::string()));
  } else {
    absl::StrAppend(&s, ",,,,,\n");
  }
  return s;
}

std::string TableText(const std::vector<LevelResult>& levels) {
  std::string t = absl::StrFormat(
      "%-10s %6s %5s %8s %9s %9s %8s %8s %8s %8s %8s %8s %8s %8s %8s %9s %-22s\n", "level", "done", "err", "req/s",
      "out tok/s", "tot tok/s", "TTFTmean", "TTFTp50", "TTFTp90", "TTFTp99", "TPOTmean", "TPOTp99", "ITLp50",
      "ITLp99", "E2Ep50", "goodput", "server run/wait/kv/pre");
  for (const LevelResult& r : levels) {
    std::string server = "-";
    if (r.server) {
      server = absl::StrFormat("%g/%g/%.0f%%/%g", r.server->running_max, r.server->waiting_max,
                               100 * r.server->kv_usage_max, r.server->preemptions);
      if (r.server->prefix_hit_rate) absl::StrAppend(&server, absl::StrFormat("/%.0f%%", 100 * *r.server->prefix_hit_rate));
    }
    std::string errs = absl::StrCat(r.errors);
    t += absl::StrFormat(
        "%-10s %6d %5s %8.2f %9.1f %9.1f %8.1f %8.1f %8.1f %8.1f %8.2f %8.2f %8.2f %8.2f %8.0f %9s %-22s\n",
        LevelLabel(r), r.completed, errs, r.request_throughput, r.output_throughput, r.total_throughput,
        1e3 * r.ttft.mean, 1e3 * r.ttft.p50, 1e3 * r.ttft.p90, 1e3 * r.ttft.p99, 1e3 * r.tpot.mean, 1e3 * r.tpot.p99,
        1e3 * r.itl.p50, 1e3 * r.itl.p99, 1e3 * r.e2e.p50,
        r.goodput ? absl::StrFormat("%.2f", *r.goodput) : std::string("-"), server);
  }
  t += "(times in ms; server: running max / waiting max / KV usage max / preemptions during the level, then the "
       "prefix-cache hit rate of prompt tokens where the server reports one)\n";
  bool any_errors = false;
  for (const LevelResult& r : levels) any_errors |= r.errors > 0;
  if (any_errors) {
    for (const LevelResult& r : levels) {
      if (r.errors == 0) continue;
      std::string line = absl::StrCat("errors at ", LevelLabel(r), ":");
      for (const auto& [k, n] : r.errors_by_kind) {
        if (n > 0) absl::StrAppend(&line, " ", k, "=", n);
      }
      t += line + "\n";
    }
  }
  return t;
}

}  // namespace gqa
