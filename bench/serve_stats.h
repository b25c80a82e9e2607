// gqa-bench serve: what one request measured, and the per-level summary
// (throughput, latency percentiles, goodput, errors by kind, server gauges).
// Pure functions, tested without a server.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace gqa {

// One request as the client saw it. Times in seconds on the client's
// monotonic clock.
struct RequestRecord {
  bool warmup = false;
  bool ok = false;
  // Empty when ok; else one of the kinds in ErrorKinds().
  std::string error_kind;
  std::string error_message;
  double start_s = 0;  // sent
  double ttft_s = 0;   // first token after start (ok requests)
  double e2e_s = 0;    // last byte after start
  // Gaps between token arrivals after the first token; a message carrying k
  // tokens contributes k gaps of (its gap / k).
  std::vector<double> itl_s;
  int64_t prompt_tokens = 0;  // from the server's usage when it gave one, else what was sent
  int64_t output_tokens = 0;  // tokens received
  int64_t cached_tokens = 0;  // prompt tokens the server took from its prefix cache (its usage says)
  std::vector<int32_t> output_ids;  // the tokens received, where the server sends their ids
};

// Error kinds, in report order: 429 (overload), other 4xx, 5xx, timeouts
// (the request ran past --request-timeout), disconnects (the connection
// failed or closed before the end of the response).
const std::vector<std::string>& ErrorKinds();

// Percentile p in [0, 100] of `v` with linear interpolation between closest
// ranks (numpy's default). 0 for an empty vector.
double Percentile(std::vector<double> v, double p);

struct Distribution {
  int64_t count = 0;
  double mean = 0, p50 = 0, p90 = 0, p99 = 0, min = 0, max = 0;
};
Distribution Summarize(const std::vector<double>& v);
nlohmann::json DistributionJson(const Distribution& d, double scale);  // scale: 1e3 for milliseconds

// The server's gauges sampled during a level (from /metrics).
struct ServerSamples {
  int64_t samples = 0;
  double running_mean = 0, running_max = 0;
  double waiting_mean = 0, waiting_max = 0;
  double kv_usage_mean = 0, kv_usage_max = 0;
  double preemptions = 0;  // counter at the end minus at the start
  // Prompt tokens the server found in its prefix cache over those it looked
  // up, during the level (a server without those counters: none).
  std::optional<double> prefix_hit_rate;
};

// Values of unlabelled samples in Prometheus text format, by metric name.
std::map<std::string, double> ParsePrometheus(const std::string& text);

// The gauges the level reports, from successive /metrics scrapes.
struct MetricsSample {
  double running = 0, waiting = 0, kv_usage = 0, preemptions_total = 0;
  std::optional<double> prefix_queries_total, prefix_hits_total;
};
std::optional<MetricsSample> SampleFromPrometheus(const std::string& text);
ServerSamples SummarizeServer(const std::vector<MetricsSample>& s);

struct Slo {
  std::optional<double> ttft_ms, tpot_ms;
};

// One level of a sweep (a concurrency or a request rate).
struct LevelResult {
  std::string kind;  // "concurrency" or "request_rate"
  double value = 0;  // clients, or requests/s (infinity: all at once)
  double duration_s = 0;  // first measured send to last measured end
  int64_t sent = 0, completed = 0, errors = 0;
  std::map<std::string, int64_t> errors_by_kind;
  int64_t prompt_tokens = 0, output_tokens = 0;
  // Of the prompt tokens, those the server's usage reported as cached: the
  // rest it computed (prefill work).
  int64_t cached_tokens = 0;
  double request_throughput = 0, output_throughput = 0, total_throughput = 0;
  Distribution ttft, tpot, itl, e2e;
  std::optional<double> goodput;  // requests/s meeting every SLO given
  int64_t good = 0;
  std::optional<ServerSamples> server;
};

// Aggregates the non-warm-up records of one level.
LevelResult SummarizeLevel(const std::string& kind, double value, const std::vector<RequestRecord>& records,
                           const Slo& slo);

nlohmann::json LevelJson(const LevelResult& r);
std::string CsvHeader();
std::string CsvRow(const LevelResult& r, const std::string& label);
// A fixed-width table, one row per level.
std::string TableText(const std::vector<LevelResult>& levels);

}  // namespace gqa
