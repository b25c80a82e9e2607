// gqa-bench serve: closed- and open-loop load against a running server, per
// level summaries on the terminal, in JSON and CSV, and a PNG plot.
#include "bench/serve_bench.h"

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <limits>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "base/common.h"

namespace gqa {
namespace {

// The state one level's threads share.
class LevelRun {
 public:
  LevelRun(const LoadOptions& o, const Workload& w, int64_t warmup) : o_(o), w_(w), warmup_(warmup) {}

  // Claims the next request number, or -1 when the level has sent enough.
  int64_t Claim() {
    const int64_t i = next_.fetch_add(1);
    if (i < warmup_) return i;
    const double now = SteadySeconds();
    double expected = 0;
    measure_start_.compare_exchange_strong(expected, now);  // the first measured send starts the clock
    if (o_.num_requests > 0) return i < warmup_ + o_.num_requests ? i : -1;
    return now < measure_start_.load() + o_.duration_s ? i : -1;
  }

  // One client's conversation so far (--turns).
  struct Conversation {
    int64_t turn = 0;
    std::vector<int32_t> ids;  // the last prompt and its answer
  };

  // Sends request i on `client` and records it; with conversations, as the
  // next turn of *conv.
  void Issue(int64_t i, ServeClient& client, Conversation* conv = nullptr) {
    RequestRecord rec;
    rec.warmup = i < warmup_;
    rec.start_s = SteadySeconds();
    Prompt p = w_.Get(i);
    const bool converse = conv != nullptr && o_.turns > 1 && !p.ids.empty();
    if (converse && conv->turn > 0) {
      // The conversation so far, then this request's own tokens (not the
      // shared prefix again: the conversation starts with it).
      std::vector<int32_t> ids = conv->ids;
      ids.insert(ids.end(), p.ids.begin() + std::min<int64_t>(p.shared_len, int64_t(p.ids.size())), p.ids.end());
      p.ids = std::move(ids);
    }
    ++inflight_;
    client.Send(p, o_.timeout_s, &rec);
    if (converse) {
      conv->ids = p.ids;
      conv->ids.insert(conv->ids.end(), rec.output_ids.begin(), rec.output_ids.end());
      if (++conv->turn >= o_.turns || !rec.ok) *conv = Conversation{};
    }
    --inflight_;
    if (!rec.warmup) {
      (rec.ok ? completed_ : errors_)++;
      out_tokens_ += rec.output_tokens;
    }
    std::lock_guard<std::mutex> lock(mu_);
    records_.push_back(std::move(rec));
  }

  std::vector<RequestRecord> TakeRecords() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::vector<RequestRecord>(records_.begin(), records_.end());
  }
  double measure_start() const { return measure_start_.load(); }
  int64_t inflight() const { return inflight_.load(); }
  int64_t completed() const { return completed_.load(); }
  int64_t errors() const { return errors_.load(); }
  int64_t out_tokens() const { return out_tokens_.load(); }

 private:
  const LoadOptions& o_;
  const Workload& w_;
  const int64_t warmup_;
  std::atomic<int64_t> next_{0}, inflight_{0}, completed_{0}, errors_{0}, out_tokens_{0};
  std::atomic<double> measure_start_{0};
  std::mutex mu_;
  std::deque<RequestRecord> records_;
};

std::string LevelName(const LevelSpec& l) {
  if (l.kind == "concurrency") return absl::StrCat("concurrency ", static_cast<int64_t>(l.value));
  if (std::isinf(l.value)) return "request rate inf";
  return absl::StrFormat("request rate %g/s", l.value);
}

LevelResult RunLevel(const LoadOptions& o, const LevelSpec& level, ClientFactory& clients, const Workload& w,
                     const std::string& label) {
  // Auto warm-up: each client's first request (a closed loop starts with a
  // burst of simultaneous prefills, and each client opens its connection).
  const int64_t warmup = o.warmup >= 0 ? o.warmup : level.kind == "concurrency" ? int64_t(level.value) : 0;
  LevelRun run(o, w, warmup);
  std::atomic<bool> finished{false};
  std::vector<std::thread> threads;
  if (level.kind == "concurrency") {
    // Closed loop: each client sends its next request when the last ends.
    for (int c = 0; c < static_cast<int>(level.value); ++c) {
      threads.emplace_back([&] {
        std::unique_ptr<ServeClient> client = clients.NewClient();
        LevelRun::Conversation conv;
        for (int64_t i; (i = run.Claim()) >= 0;) run.Issue(i, *client, &conv);
      });
    }
  } else {
    // Open loop: Poisson arrivals (exponential gaps), each request on its own
    // thread and connection, whatever the server's state.
    threads.emplace_back([&] {
      const uint64_t level_seed = std::isinf(level.value) ? ~uint64_t{0} : static_cast<uint64_t>(level.value * 1000);
      std::mt19937_64 rng(o.seed ^ level_seed);
      std::exponential_distribution<double> gap(std::isinf(level.value) ? 1.0 : level.value);
      std::vector<std::thread> senders;
      double next_at = SteadySeconds();
      for (;;) {
        if (!std::isinf(level.value)) {
          next_at += gap(rng);
          const double wait = next_at - SteadySeconds();
          if (wait > 0) std::this_thread::sleep_for(std::chrono::duration<double>(wait));
        }
        const int64_t i = run.Claim();
        if (i < 0) break;
        senders.emplace_back([&run, &clients, i] {
          std::unique_ptr<ServeClient> client = clients.NewClient();
          run.Issue(i, *client);
        });
      }
      for (std::thread& t : senders) t.join();
    });
  }

  // The server's gauges, sampled while measured requests run.
  std::vector<MetricsSample> samples;
  std::thread scraper;
  if (o.metrics_port > 0) {
    scraper = std::thread([&] {
      while (!finished.load()) {
        if (run.measure_start() > 0) {
          absl::StatusOr<std::string> text = HttpGet(o.metrics_host, o.metrics_port, "/metrics", 5);
          if (text.ok()) {
            if (std::optional<MetricsSample> s = SampleFromPrometheus(*text)) samples.push_back(*s);
          }
          std::this_thread::sleep_for(std::chrono::duration<double>(o.scrape_interval_s));
        } else {
          // The first sample as soon as measuring starts: the counters' base.
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
      }
      absl::StatusOr<std::string> text = HttpGet(o.metrics_host, o.metrics_port, "/metrics", 5);  // the last count
      if (text.ok()) {
        if (std::optional<MetricsSample> s = SampleFromPrometheus(*text)) samples.push_back(*s);
      }
    });
  }
  // A progress line on stderr: in place on a terminal, every 5 s otherwise.
  std::thread progress;
  if (o.progress) {
    progress = std::thread([&] {
      const bool tty = isatty(2);
      const double t0 = SteadySeconds();
      int tick = 0;
      while (!finished.load()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        if (++tick % (tty ? 5 : 25) != 0 || finished.load()) continue;
        const double ms = run.measure_start();
        const double t = SteadySeconds() - (ms > 0 ? ms : t0);
        std::fprintf(stderr, "%s%s%s %6.1fs %s done %lld  errors %lld  in flight %lld  output %.1f tok/s%s",
                     tty ? "\r\033[K" : "", label.empty() ? "" : absl::StrCat(label, ": ").c_str(),
                     LevelName(level).c_str(), t, ms > 0 ? "measured," : "warm-up,",
                     static_cast<long long>(run.completed()), static_cast<long long>(run.errors()),
                     static_cast<long long>(run.inflight()), ms > 0 && t > 0 ? double(run.out_tokens()) / t : 0.0,
                     tty ? "" : "\n");
      }
      if (tty) std::fprintf(stderr, "\r\033[K");
    });
  }
  for (std::thread& t : threads) t.join();
  finished = true;
  if (scraper.joinable()) scraper.join();
  if (progress.joinable()) progress.join();
  LevelResult r = SummarizeLevel(level.kind, level.value, run.TakeRecords(), o.slo);
  if (!samples.empty()) {
    r.server = SummarizeServer(samples);
  } else if (o.metrics_port > 0) {
    std::fprintf(stderr, "warning: no /metrics from %s:%d during the level\n", o.metrics_host.c_str(), o.metrics_port);
  }
  std::fprintf(stderr, "%s%s: %lld completed, %lld errors, %.2f req/s, %.1f output tok/s, TTFT p50 %.1f ms\n",
               label.empty() ? "" : absl::StrCat(label, ": ").c_str(), LevelName(level).c_str(),
               static_cast<long long>(r.completed), static_cast<long long>(r.errors), r.request_throughput,
               r.output_throughput, 1e3 * r.ttft.p50);
  return r;
}

absl::StatusOr<std::vector<LevelSpec>> LevelsFromFlags(const Flags& f) {
  std::vector<LevelSpec> levels;
  if (f.Has("concurrency") && f.Has("request-rate")) {
    return absl::InvalidArgumentError("give --concurrency or --request-rate, not both");
  }
  if (f.Has("request-rate")) {
    for (absl::string_view part : absl::StrSplit(f.Get("request-rate"), ',', absl::SkipWhitespace())) {
      double v;
      if (part == "inf") {
        v = std::numeric_limits<double>::infinity();
      } else if (!absl::SimpleAtod(part, &v) || !(v > 0) || std::isinf(v)) {
        return absl::InvalidArgumentError(absl::StrCat("--request-rate: '", part, "' is not a positive number or inf"));
      }
      levels.push_back({"request_rate", v});
    }
  } else {
    ASSIGN_OR_RETURN(std::vector<int> cs, f.GetIntList("concurrency"));
    for (int c : cs) {
      if (c < 1 || c > 4096) return absl::InvalidArgumentError("--concurrency values must be in 1..4096");
      levels.push_back({"concurrency", double(c)});
    }
  }
  if (levels.empty()) return absl::InvalidArgumentError("no levels to run");
  return levels;
}

}  // namespace

std::vector<LevelResult> RunLoad(const LoadOptions& o, ClientFactory& clients, const Workload& workload,
                                 const std::string& label) {
  std::vector<LevelResult> out;
  for (const LevelSpec& l : o.levels) out.push_back(RunLevel(o, l, clients, workload, label));
  return out;
}

void AddServeFlags(Flags& f) {
  f.Add("url", "http://127.0.0.1:8000", "serve: the server, http://HOST:PORT (OpenAI /v1/completions, streamed) or grpc://HOST:PORT (gqa.v1 GenerateStream)");
  f.Add("metrics-url", "", "serve: where /metrics is scraped during each level (default: --url when it is http; 'none' to skip)");
  f.Add("api-key", "", "serve: sent as 'Authorization: Bearer KEY' (default: $GQA_API_KEY)");
  f.Add("served-model", "", "serve: the 'model' field of HTTP requests (default: none sent)");
  f.Add("concurrency", "1,2,4,8,16,32", "serve: closed loop, clients sending back to back, one level per value");
  f.Add("request-rate", "", "serve: open loop instead, Poisson arrivals per second, one level per value; inf sends all at once");
  f.Add("input-len", "128", "serve: prompt length, tokens (--prompt-kind ids) or words (text)");
  f.Add("output-len", "128", "serve: max_tokens per request");
  f.AddBool("no-ignore-eos", "serve: let requests stop at EOS (by default ignore_eos is sent, so lengths are exact)");
  f.Add("temperature", "0", "serve: sampling temperature sent with every request (0: greedy)");
  f.Add("shared-prefix-len", "0", "serve: tokens (ids) or words (text) of one prefix that every prompt starts "
        "with, before its --input-len of its own (as a shared system prompt: exercises prefix caching)");
  f.Add("turns", "1", "serve, closed loop, --prompt-kind ids: requests per conversation; each one after the first "
        "resends the conversation so far (prompt and answer ids) plus --input-len new tokens (multi-turn chat)");
  f.Add("prompt-kind", "ids", "serve: ids (random token ids) or text (random common words)");
  f.Add("vocab-size", "1000", "serve: random token ids are drawn from [3, vocab-size)");
  f.Add("dataset", "", "serve: JSONL prompts instead ({\"prompt\": text or [ids], \"max_tokens\": N}), cycled");
  f.Add("warmup", "auto", "serve: requests at the start of each level excluded from its results; auto: one per client "
        "(closed loop), none (open loop)");
  f.Add("duration", "10", "serve: seconds of measured sends per level (unless --num-requests)");
  f.Add("num-requests", "0", "serve: measured requests per level; 0: use --duration");
  f.Add("request-timeout", "300", "serve: seconds before a request counts as a timeout");
  f.Add("slo-ttft-ms", "", "serve: goodput counts requests with TTFT at most this");
  f.Add("slo-tpot-ms", "", "serve: goodput counts requests with TPOT at most this");
  f.Add("seed", "0", "serve: seed of prompts and arrivals");
  f.AddBool("no-progress", "serve: no progress line on stderr");
  f.Add("output-json", "", "serve: write {config, levels: [one object per level]} here");
  f.Add("output-csv", "", "serve: write one row per level here");
  f.Add("plot", "", "serve: write a PNG (gnuplot): throughput and TTFT/TPOT against the level");
  // serve-sweep
  f.Add("models", "", "serve-sweep: model directories to compare (default: MHA, GQA and MQA variants of one shape, random weights)");
  f.Add("sweep-kv-heads", "", "serve-sweep: KV heads of the variants (default: --heads,8,1 = MHA, GQA-8, MQA); the shape flags (--layers, "
        "--hidden, --heads, --head-dim, --intermediate, --vocab, --dtype) default here to 4 layers, hidden 512, 32 heads, "
        "head_dim 16, MLP 1376, vocabulary 4096, bf16");
  f.Add("kv-cache-memory", "16777216", "serve-sweep: the KV-cache budget in bytes given to every server");
  f.Add("server-bin", "", "serve-sweep: the gqa-server program (default: beside gqa-bench)");
  f.Add("server-args", "", "serve-sweep: more gqa-server flags, space-separated (e.g. '--tp 2 --threads 2')");
  f.Add("work-dir", "", "serve-sweep: where models and server logs are written (default: a new directory under /tmp)");
}

absl::Status LoadOptionsFromFlags(const Flags& f, LoadOptions* o) {
  ASSIGN_OR_RETURN(o->levels, LevelsFromFlags(f));
  if (f.Get("warmup") == "auto") {
    o->warmup = -1;
  } else {
    ASSIGN_OR_RETURN(o->warmup, f.GetInt("warmup"));
    if (o->warmup < 0) return absl::InvalidArgumentError("--warmup must be >= 0 or auto");
  }
  ASSIGN_OR_RETURN(o->duration_s, f.GetDouble("duration"));
  ASSIGN_OR_RETURN(o->num_requests, f.GetInt("num-requests"));
  ASSIGN_OR_RETURN(o->timeout_s, f.GetDouble("request-timeout"));
  ASSIGN_OR_RETURN(int64_t seed, f.GetInt("seed"));
  o->seed = static_cast<uint64_t>(seed);
  ASSIGN_OR_RETURN(o->turns, f.GetInt("turns"));
  if (o->turns < 1 || o->turns > 1000) return absl::InvalidArgumentError("--turns must be in 1..1000");
  if (o->turns > 1) {
    for (const LevelSpec& l : o->levels) {
      if (l.kind != "concurrency") return absl::InvalidArgumentError("--turns needs closed-loop levels (--concurrency)");
    }
    if (f.Get("prompt-kind") != "ids" || !f.Get("dataset").empty()) {
      return absl::InvalidArgumentError("--turns needs --prompt-kind ids (the answers come back as token ids)");
    }
  }
  if (o->num_requests < 0 || !(o->timeout_s > 0)) {
    return absl::InvalidArgumentError("--num-requests must be >= 0 and --request-timeout > 0");
  }
  if (o->num_requests == 0 && !(o->duration_s > 0)) return absl::InvalidArgumentError("--duration must be > 0");
  if (!f.Get("slo-ttft-ms").empty()) {
    ASSIGN_OR_RETURN(o->slo.ttft_ms, f.GetDouble("slo-ttft-ms"));
  }
  if (!f.Get("slo-tpot-ms").empty()) {
    ASSIGN_OR_RETURN(o->slo.tpot_ms, f.GetDouble("slo-tpot-ms"));
  }
  o->progress = !f.GetBool("no-progress");
  return absl::OkStatus();
}

absl::StatusOr<RequestOptions> RequestOptionsFromFlags(const Flags& f) {
  RequestOptions r;
  r.ignore_eos = !f.GetBool("no-ignore-eos");
  ASSIGN_OR_RETURN(r.temperature, f.GetDouble("temperature"));
  if (!(r.temperature >= 0)) return absl::InvalidArgumentError("--temperature must be >= 0");
  return r;
}

absl::Status WorkloadOptionsFromFlags(const Flags& f, WorkloadOptions* w) {
  w->kind = f.Get("prompt-kind");
  ASSIGN_OR_RETURN(w->input_len, f.GetInt("input-len"));
  ASSIGN_OR_RETURN(w->shared_prefix_len, f.GetInt("shared-prefix-len"));
  ASSIGN_OR_RETURN(w->output_len, f.GetInt("output-len"));
  ASSIGN_OR_RETURN(w->vocab_size, f.GetInt("vocab-size"));
  w->dataset = f.Get("dataset");
  ASSIGN_OR_RETURN(int64_t seed, f.GetInt("seed"));
  w->seed = static_cast<uint64_t>(seed);
  return absl::OkStatus();
}

nlohmann::json LoadConfigJson(const Flags& f) {
  nlohmann::json c;
  for (const char* name : {"concurrency", "request-rate", "input-len", "shared-prefix-len", "turns", "output-len",
                           "prompt-kind", "vocab-size",
                           "dataset", "warmup", "duration", "num-requests", "request-timeout", "slo-ttft-ms",
                           "slo-tpot-ms", "seed", "temperature"}) {
    if (std::string(name) == "concurrency" && f.Has("request-rate")) continue;
    if (std::string(name) == "request-rate" && !f.Has("request-rate")) continue;
    c[name] = f.Get(name);
  }
  c["ignore_eos"] = !f.GetBool("no-ignore-eos");
  return c;
}

absl::Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::Status RunServe(const Flags& f) {
  ASSIGN_OR_RETURN(Endpoint e, ParseEndpoint(f.Get("url")));
  e.api_key = f.Get("api-key");
  if (e.api_key.empty() && std::getenv("GQA_API_KEY") != nullptr) e.api_key = std::getenv("GQA_API_KEY");
  e.model = f.Get("served-model");
  LoadOptions o;
  RETURN_IF_ERROR(LoadOptionsFromFlags(f, &o));
  const std::string metrics = f.Get("metrics-url");
  if (metrics.empty() && e.protocol == Endpoint::Protocol::kHttp) {
    o.metrics_host = e.host;
    o.metrics_port = e.port;
  } else if (!metrics.empty() && metrics != "none") {
    ASSIGN_OR_RETURN(Endpoint m, ParseEndpoint(metrics));
    if (m.protocol != Endpoint::Protocol::kHttp) return absl::InvalidArgumentError("--metrics-url must be http://");
    o.metrics_host = m.host;
    o.metrics_port = m.port;
  }
  WorkloadOptions wo;
  RETURN_IF_ERROR(WorkloadOptionsFromFlags(f, &wo));
  ASSIGN_OR_RETURN(Workload w, Workload::Create(wo));
  std::fprintf(stderr, "gqa-bench serve: %s, %zu levels, seed %llu\n", f.Get("url").c_str(), o.levels.size(),
               static_cast<unsigned long long>(o.seed));
  ASSIGN_OR_RETURN(const RequestOptions ro, RequestOptionsFromFlags(f));
  std::unique_ptr<ClientFactory> clients = MakeClientFactory(e, ro);
  std::vector<LevelResult> levels = RunLoad(o, *clients, w, "");

  std::printf("%s", TableText(levels).c_str());
  if (!f.Get("output-json").empty()) {
    nlohmann::json j = {{"url", f.Get("url")}, {"config", LoadConfigJson(f)}, {"levels", nlohmann::json::array()}};
    for (const LevelResult& r : levels) j["levels"].push_back(LevelJson(r));
    RETURN_IF_ERROR(WriteFile(f.Get("output-json"), j.dump(2) + "\n"));
  }
  if (!f.Get("output-csv").empty()) {
    std::string csv = CsvHeader();
    for (const LevelResult& r : levels) csv += CsvRow(r, "");
    RETURN_IF_ERROR(WriteFile(f.Get("output-csv"), csv));
  }
  if (!f.Get("plot").empty()) {
    RETURN_IF_ERROR(PlotPng({PlotSeries{"gqa-serve", levels, -1}}, absl::StrCat("gqa-bench serve ", f.Get("url")),
                            f.Get("plot")));
  }
  return absl::OkStatus();
}

namespace {

std::string GnuplotQuote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string XLabel(const LevelResult& r) {
  if (r.kind == "concurrency") return absl::StrCat(static_cast<int64_t>(r.value));
  if (std::isinf(r.value)) return "inf";
  return absl::StrFormat("%g", r.value);
}

}  // namespace

absl::Status PlotPng(const std::vector<PlotSeries>& series, const std::string& title, const std::string& out_png) {
  if (series.empty() || series[0].levels.empty()) return absl::InvalidArgumentError("nothing to plot");
  const std::string data = out_png + ".dat", script = out_png + ".gp";
  // One block per series: index, label, out tok/s, TTFT p50, TTFT p99, TPOT p50, TPOT p99 (ms).
  std::string d;
  for (const PlotSeries& s : series) {
    absl::StrAppend(&d, "# ", s.name, "\n");
    for (size_t i = 0; i < s.levels.size(); ++i) {
      const LevelResult& r = s.levels[i];
      absl::StrAppend(&d, absl::StrFormat("%d %s %.4f %.4f %.4f %.4f %.4f\n", i, XLabel(r), r.output_throughput,
                                          1e3 * r.ttft.p50, 1e3 * r.ttft.p99, 1e3 * r.tpot.p50, 1e3 * r.tpot.p99));
    }
    d += "\n\n";
  }
  RETURN_IF_ERROR(WriteFile(data, d));
  const bool rate = series[0].levels[0].kind == "request_rate";
  const int colors[] = {0x1f77b4, 0xd62728, 0x2ca02c, 0x9467bd, 0xff7f0e, 0x8c564b};
  std::string g;
  absl::StrAppend(&g, "set terminal pngcairo size 1200,480 font 'Sans,10'\n");
  absl::StrAppend(&g, "set output ", GnuplotQuote(out_png), "\n");
  absl::StrAppend(&g, "set multiplot layout 1,2 title ", GnuplotQuote(title), "\n");
  absl::StrAppend(&g, "set grid\nset key top left\nset xlabel ",
                  GnuplotQuote(rate ? "request rate (requests/s)" : "concurrency (clients)"), "\n");
  absl::StrAppend(&g, "set xrange [-0.3:", series[0].levels.size() - 0.7, "]\n");
  absl::StrAppend(&g, "set ylabel 'output tokens/s'\nset yrange [0:*]\n");
  // KV-full markers: a dashed vertical line at the first level where the
  // variant's KV cache was full.
  for (size_t k = 0; k < series.size(); ++k) {
    if (series[k].kv_full_index < 0) continue;
    const double x = series[k].kv_full_index + 0.04 * double(k);
    absl::StrAppend(&g, absl::StrFormat("set arrow from %g, graph 0 to %g, graph 1 nohead dt 2 lw 1.5 lc rgb '#%06x'\n",
                                        x, x, colors[k % 6]));
    absl::StrAppend(&g, absl::StrFormat("set label %s at %g, graph %g left offset 0.3,0 tc rgb '#%06x'\n",
                                        GnuplotQuote(series[k].name + " KV full"), x, 0.95 - 0.06 * double(k),
                                        colors[k % 6]));
  }
  absl::StrAppend(&g, "plot ");
  for (size_t k = 0; k < series.size(); ++k) {
    absl::StrAppend(&g, k ? ", " : "", GnuplotQuote(data), " index ", k, " using 1:3:xticlabels(2) with linespoints lw 2 pt 7 lc rgb '#",
                    absl::StrFormat("%06x", colors[k % 6]), "' title ", GnuplotQuote(series[k].name));
  }
  absl::StrAppend(&g, "\nunset arrow\nunset label\n");
  absl::StrAppend(&g, "set ylabel 'milliseconds'\nset logscale y\nset yrange [*:*]\n");
  absl::StrAppend(&g, "plot ");
  for (size_t k = 0; k < series.size(); ++k) {
    const std::string c = absl::StrFormat("lc rgb '#%06x'", colors[k % 6]);
    const std::string n = series.size() > 1 ? series[k].name + " " : "";
    absl::StrAppend(&g, k ? ", " : "", GnuplotQuote(data), " index ", k, " using 1:4:xticlabels(2) with linespoints lw 2 pt 7 ", c,
                    " title ", GnuplotQuote(n + "TTFT p50"), ", ", GnuplotQuote(data), " index ", k,
                    " using 1:6 with linespoints lw 2 pt 5 dt 2 ", c, " title ", GnuplotQuote(n + "TPOT p50"));
    if (series.size() == 1) {  // one server: the tails too (an overlay shows medians only, to stay readable)
      absl::StrAppend(&g, ", ", GnuplotQuote(data), " index ", k, " using 1:5 with linespoints lw 1 pt 6 dt 3 ", c,
                      " title ", GnuplotQuote("TTFT p99"), ", ", GnuplotQuote(data), " index ", k,
                      " using 1:7 with linespoints lw 1 pt 4 dt 4 ", c, " title ", GnuplotQuote("TPOT p99"));
    }
  }
  absl::StrAppend(&g, "\nunset multiplot\n");
  RETURN_IF_ERROR(WriteFile(script, g));
  std::string cmd = absl::StrCat("gnuplot ", script, " 2>&1");
  int rc = std::system(cmd.c_str());
  if (rc != 0) {
    // Without cairo: the libgd terminal.
    absl::StrReplaceAll({{"pngcairo size 1200,480 font 'Sans,10'", "png size 1200,480"}}, &g);
    RETURN_IF_ERROR(WriteFile(script, g));
    rc = std::system(cmd.c_str());
  }
  if (rc != 0) return absl::InternalError(absl::StrCat("gnuplot failed (", cmd, "); is gnuplot installed?"));
  std::remove(data.c_str());
  std::remove(script.c_str());
  std::fprintf(stderr, "wrote %s\n", out_png.c_str());
  return absl::OkStatus();
}

}  // namespace gqa
