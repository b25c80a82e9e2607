// gqa-server: the OpenAI-compatible HTTP API and the gqa.v1 gRPC API over
// one engine. SIGTERM / SIGINT: stop accepting, let running requests finish
// for up to --shutdown-timeout seconds, abort the rest, exit 0.
#include <signal.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "server/grpc_server.h"
#include "server/http_server.h"
#include "apps/engine_flags.h"

namespace gqa {
namespace {

// The API key from --api-key, --api-key-file or $GQA_API_KEY (a key on the
// command line is visible to every user through ps).
absl::StatusOr<std::string> ApiKey(const Flags& f) {
  if (f.Has("api-key") && f.Has("api-key-file")) {
    return absl::InvalidArgumentError("give --api-key or --api-key-file, not both");
  }
  if (f.Has("api-key-file")) {
    std::ifstream in(f.Get("api-key-file"), std::ios::binary);
    if (!in) return absl::InvalidArgumentError(absl::StrCat("--api-key-file ", f.Get("api-key-file"), ": cannot read"));
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string key(absl::StripAsciiWhitespace(ss.str()));
    if (key.empty()) return absl::InvalidArgumentError(absl::StrCat("--api-key-file ", f.Get("api-key-file"), " is empty"));
    return key;
  }
  if (f.Has("api-key")) return f.Get("api-key");
  const char* env = std::getenv("GQA_API_KEY");
  return std::string(env != nullptr ? env : "");
}

// SIGTERM / SIGINT are taken by one thread from the start: while the model
// loads, a signal ends the process at once; once serving, the first starts
// the drain and a second one ends the process without waiting for it (a
// second Ctrl-C, as with vLLM or uvicorn). Under mpirun, a failed rank wakes
// the same wait (Fail).
class SignalWatch {
 public:
  explicit SignalWatch(const sigset_t& signals) : signals_(signals) {
    thread_ = std::thread([this] {
      int sig = 0;
      sigwait(&signals_, &sig);
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (!serving_) {
          std::fprintf(stderr, "gqa: signal %d before the model was served: exiting\n", sig);
          std::fflush(stderr);
          std::_Exit(128 + sig);
        }
        sig_ = sig;
      }
      cv_.notify_all();
      sigwait(&signals_, &sig);
      std::fprintf(stderr, "gqa: second signal %d while draining: exiting now\n", sig);
      std::fflush(stderr);
      std::_Exit(128 + sig);
    });
    thread_.detach();  // it lives until a signal comes or the process ends
  }
  void Serving() {
    std::lock_guard<std::mutex> lock(mu_);
    serving_ = true;
  }
  void Fail(const absl::Status& why) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (failure_.ok()) failure_ = why;
    }
    cv_.notify_all();
  }
  // Returns the signal, or 0 after Fail.
  int Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return sig_ != 0 || !failure_.ok(); });
    return sig_;
  }
  absl::Status failure() {
    std::lock_guard<std::mutex> lock(mu_);
    return failure_;
  }

 private:
  const sigset_t signals_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool serving_ = false;
  int sig_ = 0;
  absl::Status failure_;
};

// Every `interval_s` seconds in which the engine ran steps, one line of what
// it did: requests running and waiting, KV usage, token rates, and the
// prefix cache's hit rate over the interval and since the start.
class StatsLog {
 public:
  StatsLog(const Engine& engine, double interval_s) : engine_(engine) {
    if (interval_s <= 0) return;
    thread_ = std::thread([this, interval_s] {
      EngineStats last = engine_.Stats();
      std::unique_lock<std::mutex> lock(mu_);
      while (!cv_.wait_for(lock, std::chrono::duration<double>(interval_s), [this] { return stop_; })) {
        const EngineStats now = engine_.Stats();
        if (now.steps != last.steps) Print(last, now, interval_s);
        last = now;
      }
    });
  }
  ~StatsLog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  static void Print(const EngineStats& a, const EngineStats& b, double s) {
    auto ratio = [](int64_t num, int64_t den) { return den > 0 ? 100.0 * double(num) / double(den) : 0.0; };
    std::fprintf(stderr,
                 "gqa: stats: %d running, %d waiting, KV cache %.1f%% used + %.1f%% cached; %.1f prompt, %.1f "
                 "generated tokens/s; prefix cache hit rate %.1f%% (last %g s), %.1f%% (all); %lld preemptions\n",
                 b.running, b.waiting, 100.0 * b.KvUsedFraction(), 100.0 * b.KvCachedFraction(),
                 double(b.prompt_tokens - a.prompt_tokens) / s, double(b.generated_tokens - a.generated_tokens) / s,
                 ratio(b.prefix_cache_hits - a.prefix_cache_hits, b.prefix_cache_queries - a.prefix_cache_queries), s,
                 ratio(b.prefix_cache_hits, b.prefix_cache_queries), static_cast<long long>(b.preemptions));
  }

  const Engine& engine_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

// Loading the model and tokenizer; every failure, exceptions included, comes
// back as a status naming what failed.
absl::Status Load(const Flags& f, const std::string& dir, MpiJob* mpi, std::unique_ptr<Engine>* engine,
                  std::unique_ptr<Tokenizer>* tokenizer) {
  try {
    // The tokenizer first: under mpirun the other ranks count heartbeats
    // from the moment the engine is up.
    if (std::filesystem::exists(std::filesystem::path(dir) / "tokenizer.json")) {
      ASSIGN_OR_RETURN(*tokenizer, Tokenizer::Load(dir));
    } else {
      std::fprintf(stderr, "gqa: %s has no tokenizer.json: token-id prompts only\n", dir.c_str());
    }
    ASSIGN_OR_RETURN(*engine, EngineFromFlags(f, mpi));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(dir, ": loading failed: ", e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat(dir, ": loading failed with an unknown exception"));
  }
  return absl::OkStatus();
}

// Under mpirun, after a rank failed: /health and gRPC health say so, the
// requests in flight fail (every step fails once the job is aborted), the
// streams get their last events, and the process exits non-zero so that
// mpirun ends the job and the orchestrator restarts it.
[[noreturn]] void FailJob(const absl::Status& why, HttpServer& http, GrpcServer& grpc, Frontend& frontend) {
  std::fprintf(stderr, "gqa: the tensor-parallel job failed: %s; failing %d requests in flight and exiting\n",
               std::string(why.message()).c_str(), frontend.inflight());
  std::fflush(stderr);
  http.SetUnhealthy(absl::StrCat("the tensor-parallel job failed: ", why.message()));
  grpc.SetNotServing();
  frontend.BeginDrain();
  if (!frontend.WaitIdle(std::chrono::seconds(2))) frontend.CancelAll();
  // Long enough for a health check to see the failure, short of mpirun's
  // one-second SIGTERM-to-SIGKILL grace.
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  grpc.Shutdown();
  http.Stop();
  std::fprintf(stderr, "gqa: exiting with status 1\n");
  std::fflush(stderr);
  std::_Exit(1);
}

absl::Status Run(const Flags& f, const sigset_t& signals, MpiJob* mpi) {
  // Never freed: its thread may outlive Run.
  SignalWatch& watch = *new SignalWatch(signals);
  ASSIGN_OR_RETURN(int64_t http_port, f.GetInt("http-port"));
  ASSIGN_OR_RETURN(int64_t grpc_port, f.GetInt("grpc-port"));
  ASSIGN_OR_RETURN(int64_t max_queued, f.GetInt("max-queued-requests"));
  ASSIGN_OR_RETURN(int64_t shutdown_timeout, f.GetInt("shutdown-timeout"));
  ASSIGN_OR_RETURN(int64_t max_body, f.GetInt("max-body-bytes"));
  ASSIGN_OR_RETURN(int64_t max_conn, f.GetInt("max-connections"));
  ASSIGN_OR_RETURN(int64_t max_conn_per_ip, f.GetInt("max-connections-per-ip"));
  if (http_port < 0 || http_port > 65535 || grpc_port < 0 || grpc_port > 65535) {
    return absl::InvalidArgumentError("ports must be in 0..65535");
  }
  if (max_queued < 0 || shutdown_timeout < 0 || max_body < 1024 || max_conn < 1) {
    return absl::InvalidArgumentError("--max-queued-requests, --shutdown-timeout >= 0; --max-body-bytes >= 1024; --max-connections >= 1");
  }
  if (max_conn_per_ip < 0 || max_conn_per_ip > 1000000) {
    return absl::InvalidArgumentError("--max-connections-per-ip must be in 0..1000000 (0: no limit)");
  }
  ASSIGN_OR_RETURN(double header_timeout, f.GetDouble("http-header-timeout"));
  ASSIGN_OR_RETURN(double body_timeout, f.GetDouble("http-body-timeout"));
  if (!(header_timeout > 0 && header_timeout <= 86400 && body_timeout > 0 && body_timeout <= 86400)) {
    return absl::InvalidArgumentError("--http-header-timeout and --http-body-timeout must be in (0, 86400] seconds");
  }
  const std::string log_format = f.Get("log-format");
  if (log_format != "text" && log_format != "json") return absl::InvalidArgumentError("--log-format must be text or json");
  ASSIGN_OR_RETURN(double stats_interval, f.GetDouble("log-stats-interval"));
  if (!(stats_interval >= 0 && stats_interval <= 86400)) {
    return absl::InvalidArgumentError("--log-stats-interval must be in [0, 86400] seconds");
  }
  if (!f.Has("model")) return absl::InvalidArgumentError("--model DIR is required");
  const std::string dir = f.Get("model");
  ASSIGN_OR_RETURN(const std::string api_key, ApiKey(f));

  HttpOptions ho;
  ho.host = f.Get("host");
  ho.port = static_cast<int>(http_port);
  ho.api_key = api_key;
  ho.metrics_require_key = f.GetBool("metrics-require-key");
  ho.header_timeout = std::chrono::milliseconds(static_cast<int64_t>(header_timeout * 1000));
  ho.body_timeout = std::chrono::milliseconds(static_cast<int64_t>(body_timeout * 1000));
  ho.max_body_bytes = static_cast<size_t>(max_body);
  ho.max_connections = static_cast<int>(max_conn);
  ho.max_connections_per_ip = static_cast<int>(max_conn_per_ip);
  ho.limit_loopback_connections = f.GetBool("limit-loopback-connections");
  HttpServer http(ho);
  RETURN_IF_ERROR(http.Start());  // answers 503 while the model loads
  std::fprintf(stderr, "gqa: HTTP on http://%s:%d (loading the model)\n", ho.host.c_str(), http.port());

  std::unique_ptr<Engine> engine;
  std::unique_ptr<Tokenizer> tokenizer;
  ASSIGN_OR_RETURN(double rank_timeout, f.GetDouble("rank-timeout"));
  if (!(rank_timeout > 0.2 && rank_timeout <= 3600)) return absl::InvalidArgumentError("--rank-timeout must be in (0.2, 3600]");
  if (absl::Status st = Load(f, dir, mpi, &engine, &tokenizer); !st.ok()) {
    // A model that cannot load ends the process now: nothing that was
    // started for it (threads, devices, the HTTP listener) may hold it up.
    std::fprintf(stderr, "gqa-server: %s\n", std::string(st.message()).c_str());
    std::fflush(stderr);
    std::_Exit(1);
  }
  FrontendOptions fo;
  fo.served_model_name = f.Has("served-model-name") ? f.Get("served-model-name")
                                                    : std::filesystem::path(dir).lexically_normal().filename().string();
  if (fo.served_model_name.empty()) fo.served_model_name = "model";
  fo.max_queued_requests = static_cast<int>(max_queued);
  fo.log_json = log_format == "json";
  fo.special_tokens_in_content = !f.GetBool("no-special-tokens-in-content");
  auto frontend = std::make_unique<Frontend>(std::move(engine), std::move(tokenizer), fo);

  GrpcOptions go;
  go.host = ho.host;
  go.port = static_cast<int>(grpc_port);
  go.api_key = ho.api_key;
  go.max_message_bytes = static_cast<int>(max_body);
  GrpcServer grpc(go, frontend.get());
  RETURN_IF_ERROR(grpc.Start());
  http.SetFrontend(frontend.get());
  std::fprintf(stderr, "gqa: serving '%s': HTTP on %s:%d, gRPC on %s:%d\n", fo.served_model_name.c_str(),
               ho.host.c_str(), http.port(), go.host.c_str(), grpc.port());

  if (mpi != nullptr) {
    mpi->StartWatch(kHeartbeatSeconds, rank_timeout, [&watch](const absl::Status& why) { watch.Fail(why); });
  }
  StatsLog stats(frontend->engine(), stats_interval);
  watch.Serving();
  const int sig = watch.Wait();
  if (mpi != nullptr && sig != 0) {
    // mpirun sends SIGTERM to every rank when one exits, and SIGKILL a
    // second later: a rank already silent means this is that, not an
    // operator's stop.
    if (std::vector<int> silent = mpi->SilentRanks(0.35); !silent.empty()) {
      mpi->Fail(absl::UnavailableError(absl::StrCat("rank ", silent[0], " stopped and mpirun is ending the job")));
    }
  }
  if (absl::Status why = watch.failure(); !why.ok()) FailJob(why, http, grpc, *frontend);
  std::fprintf(stderr, "gqa: signal %d: draining (%d requests in flight, up to %llds)\n", sig, frontend->inflight(),
               static_cast<long long>(shutdown_timeout));
  frontend->BeginDrain();
  grpc.SetNotServing();
  if (!frontend->WaitIdle(std::chrono::seconds(shutdown_timeout))) {
    std::fprintf(stderr, "gqa: shutdown timeout: aborting %d requests\n", frontend->inflight());
    frontend->CancelAll();
    frontend->WaitIdle(std::chrono::seconds(5));
  }
  grpc.Shutdown();
  http.Stop();
  frontend.reset();
  std::fprintf(stderr, "gqa: stopped\n");
  return absl::OkStatus();
}

}  // namespace
}  // namespace gqa

int main(int argc, char** argv) {
  // Signals are taken by sigwait in Run: block them in every thread first,
  // MPI's own threads included.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // Under mpirun: rank 0 serves, the other ranks run their shard of each step.
  absl::StatusOr<std::unique_ptr<gqa::MpiJob>> mpi = gqa::MpiJob::InitIfLaunched(&argc, &argv);
  if (!mpi.ok()) {
    std::fprintf(stderr, "gqa-server: %s\n", std::string(mpi.status().message()).c_str());
    return 1;
  }
  gqa::Flags f("gqa-server", "Serves a Hugging Face model directory over an OpenAI-compatible HTTP API and gRPC (gqa.v1).");
  gqa::AddEngineFlags(f);
  f.Add("host", "127.0.0.1", "address to bind (both APIs); 0.0.0.0 to listen on every interface");
  f.Add("http-port", "8000", "HTTP port");
  f.Add("grpc-port", "50051", "gRPC port");
  f.AddBool("metrics-require-key", "with an API key, require it for /metrics too (by default it stays open for "
            "Prometheus scrapers; it holds no request content)");
  f.Add("api-key", "", "require 'Authorization: Bearer KEY' (HTTP) / metadata 'authorization: Bearer KEY' (gRPC); "
        "default: $GQA_API_KEY (a key given here is visible in ps: prefer the file or the variable)");
  f.Add("api-key-file", "", "read the API key from this file (surrounding whitespace dropped)");
  f.Add("served-model-name", "", "model name in the APIs (default: the model directory's name)");
  f.Add("max-queued-requests", "256", "requests that may wait when all --max-num-seqs slots are taken; more get 429 / "
        "RESOURCE_EXHAUSTED; 0: no waiting room (a request is accepted only while a slot is free)");
  f.Add("shutdown-timeout", "30", "seconds to let running requests finish after SIGTERM / SIGINT");
  f.Add("max-body-bytes", "8388608", "largest HTTP body / gRPC message; larger ones get 413 / RESOURCE_EXHAUSTED");
  f.Add("max-connections", "1024", "HTTP connections served at once; more wait to be accepted (a connection holds a "
        "thread only while its request is read and answered, or streamed)");
  f.Add("max-connections-per-ip", "64", "HTTP connections one client address may hold at once; one more is answered 429 "
        "and closed; 0: no limit. Loopback clients are not counted (see --limit-loopback-connections); behind a "
        "proxy every client has the proxy's address: raise this or set 0");
  f.AddBool("limit-loopback-connections", "count loopback clients (127.0.0.0/8, ::1) against "
            "--max-connections-per-ip too");
  f.Add("http-header-timeout", "10", "seconds for a request's headers to arrive, from its first byte; then 408");
  f.Add("http-body-timeout", "60", "seconds for a request's body to arrive, after its headers; then 408");
  f.Add("log-stats-interval", "10", "seconds between the stats lines on stderr (requests, KV usage, token rates, "
        "prefix-cache hit rate), printed only when the engine ran; 0: none");
  f.Add("log-format", "text", "request log lines: text (key=value) or json (one object per line)");
  f.AddBool("no-special-tokens-in-content",
            "encode chat message content as plain text: '</s>' or '<|im_end|>' typed by a user stays text "
            "(default: like transformers' apply_chat_template, such text becomes the special token)");
  gqa::ParseFlagsOrExit(f, argc, argv);
  signal(SIGPIPE, SIG_IGN);
  // Other ranks leave signals blocked: rank 0 decides when the job stops.
  if (*mpi != nullptr && (*mpi)->rank() != 0) {
    const int rc = gqa::ServeMpiRankFromFlags(f, mpi->get());
    mpi->reset();
    return rc;
  }
  absl::Status st = gqa::Run(f, signals, mpi->get());
  if (!st.ok()) {
    std::fprintf(stderr, "gqa-server: %s\n", std::string(st.message()).c_str());
    std::fflush(stderr);
    if (*mpi != nullptr) std::_Exit(1);  // the other ranks are not told to stop: MPI is not finalised
    return 1;
  }
  mpi->reset();
  return 0;
}
