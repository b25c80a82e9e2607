// gqa-bench serve: the statistics on known inputs, then the program itself
// against a tiny gqa-server for a few seconds: request counts add up, tokens
// are what was asked for, percentiles are ordered, 429s are counted (and
// agree with the server's own count of refusals), gRPC and open loop work.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"
#include "bench/serve_client.h"
#include "bench/serve_stats.h"
#include "bench/server_process.h"
#include "worker/synthetic_model.h"

namespace gqa {
namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;

// A fresh per-process directory (created).
std::string TempDir(const std::string& name) {
  const std::string d = testing::ProcessTempDir(name);
  fs::create_directories(d);
  return d;
}

TEST(ServeStatsTest, PercentileInterpolatesBetweenRanks) {
  EXPECT_DOUBLE_EQ(Percentile({}, 50), 0);
  EXPECT_DOUBLE_EQ(Percentile({7}, 99), 7);
  EXPECT_DOUBLE_EQ(Percentile({4, 1, 3, 2}, 50), 2.5);
  EXPECT_DOUBLE_EQ(Percentile({4, 1, 3, 2}, 90), 3.7);
  EXPECT_DOUBLE_EQ(Percentile({4, 1, 3, 2}, 0), 1);
  EXPECT_DOUBLE_EQ(Percentile({4, 1, 3, 2}, 100), 4);
  std::vector<double> v;
  for (int i = 1; i <= 101; ++i) v.push_back(i);
  EXPECT_DOUBLE_EQ(Percentile(v, 99), 100);
}

RequestRecord Ok(double start, double ttft, double e2e, int64_t out) {
  RequestRecord r;
  r.ok = true;
  r.start_s = start;
  r.ttft_s = ttft;
  r.e2e_s = e2e;
  r.prompt_tokens = 10;
  r.output_tokens = out;
  for (int64_t i = 1; i < out; ++i) r.itl_s.push_back((e2e - ttft) / double(out - 1));
  return r;
}

TEST(ServeStatsTest, LevelCountsThroughputTpotAndGoodput) {
  std::vector<RequestRecord> recs;
  RequestRecord warm = Ok(-100, 50, 60, 5);  // excluded: would stretch the window and the TTFTs
  warm.warmup = true;
  recs.push_back(warm);
  recs.push_back(Ok(0.0, 0.1, 1.1, 11));   // TPOT 0.1
  recs.push_back(Ok(0.5, 0.3, 1.3, 6));    // TPOT 0.2
  recs.push_back(Ok(1.0, 0.2, 1.0, 1));    // no TPOT
  RequestRecord e;
  e.start_s = 1.5;
  e.e2e_s = 0.01;
  e.error_kind = "http_429";
  recs.push_back(e);
  e.error_kind = "timeout";
  e.e2e_s = 1.5;  // ends at 3.0: the window's end
  recs.push_back(e);
  Slo slo;
  slo.ttft_ms = 250;
  slo.tpot_ms = 150;
  const LevelResult r = SummarizeLevel("concurrency", 4, recs, slo);
  EXPECT_EQ(r.sent, 5);
  EXPECT_EQ(r.completed, 3);
  EXPECT_EQ(r.errors, 2);
  EXPECT_EQ(r.errors_by_kind.at("http_429"), 1);
  EXPECT_EQ(r.errors_by_kind.at("timeout"), 1);
  EXPECT_EQ(r.errors_by_kind.at("http_5xx"), 0);
  EXPECT_DOUBLE_EQ(r.duration_s, 3.0);
  EXPECT_DOUBLE_EQ(r.request_throughput, 1.0);
  EXPECT_DOUBLE_EQ(r.output_throughput, 18.0 / 3.0);
  EXPECT_DOUBLE_EQ(r.total_throughput, 48.0 / 3.0);
  EXPECT_EQ(r.tpot.count, 2);
  EXPECT_NEAR(r.tpot.mean, 0.15, 1e-12);
  EXPECT_NEAR(r.ttft.mean, 0.2, 1e-12);
  EXPECT_EQ(r.itl.count, 15);
  // Good: the first (TTFT 100 ms, TPOT 100 ms) and the third (TTFT 200 ms,
  // one token); the second misses both.
  EXPECT_EQ(r.good, 2);
  ASSERT_TRUE(r.goodput.has_value());
  EXPECT_DOUBLE_EQ(*r.goodput, 2.0 / 3.0);
  EXPECT_FALSE(SummarizeLevel("concurrency", 4, recs, Slo{}).goodput.has_value());
  const Json j = LevelJson(r);
  EXPECT_EQ(j["concurrency"], 4);
  EXPECT_DOUBLE_EQ(j["ttft_ms"]["mean"].get<double>(), 200);
}

TEST(ServeStatsTest, PrometheusGaugesAndPreemptionDelta) {
  const std::string text =
      "# HELP gqa_num_requests_running Requests running.\n# TYPE gqa_num_requests_running gauge\n"
      "gqa_num_requests_running 3\ngqa_num_requests_waiting 2\ngqa_kv_cache_usage_ratio 0.5\n"
      "gqa_num_preemptions_total 7\ngqa_time_to_first_token_seconds_bucket{le=\"0.1\"} 4\n";
  const std::map<std::string, double> m = ParsePrometheus(text);
  EXPECT_EQ(m.count("gqa_time_to_first_token_seconds_bucket"), 0u);
  std::optional<MetricsSample> a = SampleFromPrometheus(text);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->running, 3);
  EXPECT_EQ(a->waiting, 2);
  MetricsSample b = *a;
  b.running = 1;
  b.waiting = 0;
  b.kv_usage = 0.9;
  b.preemptions_total = 10;
  const ServerSamples s = SummarizeServer({*a, b});
  EXPECT_EQ(s.samples, 2);
  EXPECT_DOUBLE_EQ(s.running_mean, 2);
  EXPECT_DOUBLE_EQ(s.waiting_max, 2);
  EXPECT_DOUBLE_EQ(s.kv_usage_max, 0.9);
  EXPECT_DOUBLE_EQ(s.preemptions, 3);
  EXPECT_FALSE(SampleFromPrometheus("other_metric 1\n").has_value());
}

TEST(ServeStatsTest, EndpointsAndDataset) {
  absl::StatusOr<Endpoint> e = ParseEndpoint("http://127.0.0.1:8000/v1");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->port, 8000);
  EXPECT_EQ(e->host, "127.0.0.1");
  e = ParseEndpoint("grpc://localhost:50051");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->protocol, Endpoint::Protocol::kGrpc);
  EXPECT_FALSE(ParseEndpoint("localhost:8000").ok());
  EXPECT_FALSE(ParseEndpoint("http://localhost").ok());

  const std::string path = TempDir("gqa_serve_dataset") + "/d.jsonl";
  std::ofstream(path) << "{\"prompt\": \"hello there\", \"max_tokens\": 5}\n\n{\"prompt\": [5, 6, 7]}\n";
  WorkloadOptions o;
  o.dataset = path;
  o.output_len = 9;
  absl::StatusOr<Workload> w = Workload::Create(o);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_EQ(w->size(), 2u);
  EXPECT_EQ(w->Get(0).text, "hello there");
  EXPECT_EQ(w->Get(0).max_tokens, 5);
  EXPECT_EQ(w->Get(1).ids, (std::vector<int32_t>{5, 6, 7}));
  EXPECT_EQ(w->Get(3).max_tokens, 9);  // cycled
  std::ofstream(path) << "{\"text\": 1}\n";
  EXPECT_FALSE(Workload::Create(o).ok());

  WorkloadOptions r;
  r.input_len = 17;
  r.vocab_size = 50;
  absl::StatusOr<Workload> rw = Workload::Create(r);
  ASSERT_TRUE(rw.ok());
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(rw->Get(i).ids.size(), 17u);
    for (int32_t id : rw->Get(i).ids) ASSERT_TRUE(id >= 3 && id < 50);
  }
}

// ---- gqa-bench serve against a real server ----

const std::string& TinyModel() {
  static const std::string dir = [] {
    SyntheticModelSpec s;
    s.layers = 1;
    s.hidden = 32;
    s.heads = 4;
    s.kv_heads = 2;
    s.intermediate = 48;
    s.vocab = 300;
    s.dtype = DType::kBF16;
    s.max_position = 512;
    s.seed = 3;
    const std::string d = TempDir("gqa_serve_bench_model");
    EXPECT_TRUE(WriteSyntheticModel(s, d).ok());
    return d;
  }();
  return dir;
}

// Runs gqa-bench with `args`; its JSON, or null after a failure.
Json RunBench(const std::string& tag, const std::vector<std::string>& args) {
  const std::string dir = TempDir(tag);
  const std::string json = dir + "/out.json", log = dir + "/bench.log";
  fs::remove(json);
  const std::string cmd = absl::StrCat(GQA_BIN_DIR, "/gqa-bench serve --no-progress --vocab-size 300 --output-json ",
                                       json, " ", absl::StrJoin(args, " "), " > ", log, " 2>&1");
  const int rc = std::system(cmd.c_str());
  std::ifstream lf(log);
  const std::string text((std::istreambuf_iterator<char>(lf)), {});
  EXPECT_EQ(rc, 0) << cmd << "\n" << text;
  std::ifstream in(json);
  if (rc != 0 || !in) return Json();
  return Json::parse(in);
}

void ExpectOrdered(const Json& d, const std::string& what) {
  EXPECT_LE(d["min"].get<double>(), d["p50"].get<double>()) << what;
  EXPECT_LE(d["p50"].get<double>(), d["p90"].get<double>()) << what;
  EXPECT_LE(d["p90"].get<double>(), d["p99"].get<double>()) << what;
  EXPECT_LE(d["p99"].get<double>(), d["max"].get<double>()) << what;
  EXPECT_LE(d["min"].get<double>(), d["mean"].get<double>()) << what;
  EXPECT_LE(d["mean"].get<double>(), d["max"].get<double>()) << what;
}

double MetricValue(int port, const std::string& name) {
  absl::StatusOr<std::string> text = HttpGet("127.0.0.1", port, "/metrics", 5);
  if (!text.ok()) return -1;
  const std::map<std::string, double> m = ParsePrometheus(*text);
  auto it = m.find(name);
  return it == m.end() ? -1 : it->second;
}

TEST(ServeBenchProcessTest, ClosedLoopOpenLoopAndGrpcCountsAddUp) {
  ServerProcess server;
  const std::string log = TempDir("gqa_serve_bench_server") + "/server.log";
  ASSERT_OK(server.Start(std::string(GQA_BIN_DIR) + "/gqa-server",
                           {"--model", TinyModel(), "--tp", "1", "--threads", "1", "--num-kv-blocks", "256"}, log, 120));
  const std::string http = absl::StrCat("http://127.0.0.1:", server.http_port());
  const Json j = RunBench("gqa_serve_bench_closed", {"--url", http, "--concurrency", "1,3", "--num-requests", "9",
                                                     "--input-len", "12", "--output-len", "6",
                                                     "--slo-ttft-ms", "100000", "--output-csv",
                                                     TempDir("gqa_serve_bench_closed") + "/o.csv"});
  ASSERT_TRUE(j.contains("levels"));
  ASSERT_EQ(j["levels"].size(), 2u);
  for (const Json& l : j["levels"]) {
    EXPECT_TRUE(l["concurrency"].is_number_integer()) << l.dump();
    EXPECT_EQ(l["sent"], 9);
    EXPECT_EQ(l["completed"].get<int>() + l["errors"].get<int>(), 9);
    EXPECT_EQ(l["completed"], 9) << l.dump();
    EXPECT_EQ(l["output_tokens"], 9 * 6);  // ignore_eos: exact lengths
    EXPECT_EQ(l["prompt_tokens"], 9 * 12);
    EXPECT_GT(l["request_throughput"].get<double>(), 0);
    EXPECT_NEAR(l["output_throughput"].get<double>(), 6 * l["request_throughput"].get<double>(), 1e-6);
    EXPECT_EQ(l["ttft_ms"]["count"], 9);
    EXPECT_EQ(l["tpot_ms"]["count"], 9);
    EXPECT_EQ(l["itl_ms"]["count"], 9 * 5);
    ExpectOrdered(l["ttft_ms"], "ttft");
    ExpectOrdered(l["tpot_ms"], "tpot");
    ExpectOrdered(l["e2e_latency_ms"], "e2e");
    EXPECT_LE(l["ttft_ms"]["max"].get<double>(), l["e2e_latency_ms"]["max"].get<double>());
    EXPECT_NEAR(l["goodput"].get<double>(), l["request_throughput"].get<double>(), 1e-9);  // a loose SLO: all good
    ASSERT_TRUE(l["server"].is_object());
    EXPECT_GT(l["server"]["samples"].get<int>(), 0);
  }
  std::ifstream csv(TempDir("gqa_serve_bench_closed") + "/o.csv");
  int lines = 0;
  for (std::string line; std::getline(csv, line);) ++lines;
  EXPECT_EQ(lines, 3);  // header + one row per level

  // Open loop, all at once, and a Poisson rate.
  const Json o = RunBench("gqa_serve_bench_open", {"--url", http, "--request-rate", "inf,50", "--num-requests", "6",
                                                   "--warmup", "0", "--input-len", "5", "--output-len", "4"});
  ASSERT_EQ(o["levels"].size(), 2u);
  EXPECT_EQ(o["levels"][0]["request_rate"], "inf");
  EXPECT_EQ(o["levels"][1]["request_rate"], 50);
  for (const Json& l : o["levels"]) {
    EXPECT_EQ(l["completed"], 6) << l.dump();
    EXPECT_EQ(l["output_tokens"], 24);
  }

  // gRPC streaming.
  const Json g = RunBench("gqa_serve_bench_grpc",
                          {"--url", absl::StrCat("grpc://127.0.0.1:", server.grpc_port()), "--metrics-url", http,
                           "--concurrency", "2", "--num-requests", "5", "--warmup", "1", "--input-len", "7",
                           "--output-len", "5"});
  ASSERT_EQ(g["levels"].size(), 1u);
  EXPECT_EQ(g["levels"][0]["completed"], 5) << g.dump();
  EXPECT_EQ(g["levels"][0]["output_tokens"], 25);
  EXPECT_EQ(g["levels"][0]["prompt_tokens"], 35);
  ExpectOrdered(g["levels"][0]["ttft_ms"], "grpc ttft");
}

// A shared prefix, then conversations of three turns (each resends the
// last prompt and its answer, then 3 new tokens), over HTTP and gRPC: the
// prompt lengths add up exactly, and the server reports cached tokens.
TEST(ServeBenchProcessTest, SharedPrefixAndConversationsHitThePrefixCache) {
  ServerProcess server;
  const std::string log = TempDir("gqa_serve_bench_prefix_server") + "/server.log";
  ASSERT_OK(server.Start(std::string(GQA_BIN_DIR) + "/gqa-server",
                         {"--model", TinyModel(), "--tp", "1", "--threads", "1", "--num-kv-blocks", "256",
                          "--block-size", "4"},
                         log, 120));
  const std::string http = absl::StrCat("http://127.0.0.1:", server.http_port());
  const Json shared = RunBench("gqa_serve_bench_prefix", {"--url", http, "--concurrency", "2", "--num-requests", "24",
                                                          "--shared-prefix-len", "20", "--input-len", "3",
                                                          "--output-len", "4"});
  const Json& l = shared["levels"][0];
  EXPECT_EQ(l["completed"], 24) << l.dump();
  EXPECT_EQ(l["prompt_tokens"], 24 * 23);
  EXPECT_EQ(l["cached_prompt_tokens"].get<int>(), 24 * 20) << "after warm-up every prompt finds the prefix";
  EXPECT_EQ(l["computed_prompt_tokens"].get<int>(), 24 * 3);
  EXPECT_NEAR(l["prompt_cache_hit_rate"].get<double>(), 20.0 / 23, 1e-9);
  // The server's own count, over what it admitted while the level measured.
  ASSERT_TRUE(l["server"]["prefix_cache_hit_rate"].is_number()) << l.dump();
  EXPECT_GT(l["server"]["prefix_cache_hit_rate"].get<double>(), 0.5);
  int seed = 5;
  for (const std::string url : {http, absl::StrCat("grpc://127.0.0.1:", server.grpc_port())}) {
    const Json turns = RunBench("gqa_serve_bench_turns", {"--url", url, "--metrics-url", http, "--concurrency", "1",
                                                          "--num-requests", "12", "--warmup", "0", "--turns", "3",
                                                          "--shared-prefix-len", "20", "--input-len", "3",
                                                          "--output-len", "4", "--seed", std::to_string(seed++)});
    const Json& t = turns["levels"][0];
    EXPECT_EQ(t["completed"], 12) << url << ": " << t.dump();
    // Four conversations of 23, 23 + 4 + 3 and 30 + 4 + 3 tokens.
    EXPECT_EQ(t["prompt_tokens"], 4 * (23 + 30 + 37)) << url;
    // The first turns find the prefix (20 tokens; not the very first: a new
    // seed, a new prefix), the later ones the last prompt and answer (24 of
    // 30 and 32 of 37 in blocks of 4: the answer's last token has no K/V).
    EXPECT_EQ(t["cached_prompt_tokens"].get<int>(), 4 * (20 + 24 + 32) - 20) << url;
  }
  // Conversations need clients that wait for their answers.
  const std::string refused = absl::StrCat(GQA_BIN_DIR, "/gqa-bench serve --url ", http,
                                           " --request-rate 5 --turns 2 > /dev/null 2>&1");
  EXPECT_NE(std::system(refused.c_str()), 0);
}

TEST(ServeBenchProcessTest, OverloadedServerGives429sThatAreCounted) {
  ServerProcess server;
  const std::string log = TempDir("gqa_serve_bench_429_server") + "/server.log";
  // One slot and no waiting room: with 6 clients most requests are refused.
  ASSERT_OK(server.Start(std::string(GQA_BIN_DIR) + "/gqa-server",
                           {"--model", TinyModel(), "--tp", "1", "--threads", "1", "--num-kv-blocks", "256",
                            "--max-num-seqs", "1", "--max-queued-requests", "0"},
                           log, 120));
  const double rejected_before = MetricValue(server.http_port(), "gqa_requests_rejected_total");
  ASSERT_GE(rejected_before, 0);
  const Json j = RunBench("gqa_serve_bench_429", {"--url", absl::StrCat("http://127.0.0.1:", server.http_port()),
                                                  "--concurrency", "6", "--num-requests", "60", "--warmup", "0",
                                                  "--input-len", "8", "--output-len", "24"});
  ASSERT_EQ(j["levels"].size(), 1u);
  const Json& l = j["levels"][0];
  EXPECT_EQ(l["sent"], 60);
  EXPECT_EQ(l["completed"].get<int>() + l["errors"].get<int>(), 60);
  EXPECT_GT(l["completed"].get<int>(), 0);
  EXPECT_GT(l["errors_by_kind"]["http_429"].get<int>(), 0) << l.dump();
  EXPECT_EQ(l["errors"], l["errors_by_kind"]["http_429"]);
  // The server's own count of refusals agrees with the client's.
  EXPECT_EQ(MetricValue(server.http_port(), "gqa_requests_rejected_total") - rejected_before,
            l["errors_by_kind"]["http_429"].get<double>());
  EXPECT_EQ(l["output_tokens"].get<int>(), 24 * l["completed"].get<int>());
  EXPECT_LE(l["server"]["running_max"].get<double>(), 1);
}

}  // namespace
}  // namespace gqa
