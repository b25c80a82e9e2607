// gqa-bench serve / serve-sweep: load against a running server (closed loop
// at fixed concurrencies or open loop at Poisson request rates), and the
// MHA / GQA / MQA sweep through servers this program starts itself.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "base/flags.h"
#include "bench/serve_client.h"
#include "bench/serve_stats.h"

namespace gqa {

struct LevelSpec {
  std::string kind;  // "concurrency" or "request_rate"
  double value = 0;  // clients, or requests/s (infinity: all at once)
};

struct LoadOptions {
  std::vector<LevelSpec> levels;
  int64_t warmup = -1;       // requests per level excluded from the results; -1: one per client (closed loop)
  double duration_s = 0;     // per level, when num_requests is 0
  int64_t num_requests = 0;  // per level (after warm-up)
  double timeout_s = 300;    // per request
  Slo slo;
  uint64_t seed = 0;
  // Closed loop: each client holds conversations of this many requests; a
  // request after the first resends the conversation so far (its prompt and
  // the answer's token ids) and adds its own new tokens. 1: independent
  // requests.
  int64_t turns = 1;
  bool progress = true;
  // /metrics is scraped here during each level (port 0: not scraped).
  std::string metrics_host;
  int metrics_port = 0;
  double scrape_interval_s = 0.25;
};

// Runs every level in order against one server.
std::vector<LevelResult> RunLoad(const LoadOptions& o, ClientFactory& clients, const Workload& workload,
                                 const std::string& label);

// Declares the flags of both modes (on the Flags of gqa-bench).
void AddServeFlags(Flags& f);
absl::Status RunServe(const Flags& f);
absl::Status RunServeSweep(const Flags& f);

// Pieces the two modes share.
absl::Status LoadOptionsFromFlags(const Flags& f, LoadOptions* o);
absl::Status WorkloadOptionsFromFlags(const Flags& f, WorkloadOptions* w);
absl::StatusOr<RequestOptions> RequestOptionsFromFlags(const Flags& f);
nlohmann::json LoadConfigJson(const Flags& f);
absl::Status WriteFile(const std::string& path, const std::string& text);

// Plots with gnuplot (pngcairo, or png when cairo is missing): output
// tokens/s and TTFT / TPOT against the level, one line per series; `marks`
// (level index per series, -1 for none) are drawn as "KV full" markers.
struct PlotSeries {
  std::string name;
  std::vector<LevelResult> levels;
  int kv_full_index = -1;
};
absl::Status PlotPng(const std::vector<PlotSeries>& series, const std::string& title, const std::string& out_png);

}  // namespace gqa
