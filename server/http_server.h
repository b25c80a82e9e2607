// The OpenAI-compatible HTTP API on cpp-httplib: /v1/completions,
// /v1/chat/completions (both with server-sent-event streaming), /v1/models,
// /health, /metrics, /tokenize, /detokenize, /openapi.json (the API's
// OpenAPI description, docs/openapi.json). Errors use OpenAI's JSON shape.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "server/frontend.h"

namespace httplib {
class Server;
}

namespace gqa {

class ConnectionLoop;

// One route the server answers; `path` is written as in OpenAPI, a
// parameter as {name}. GET routes answer HEAD too.
struct HttpRoute {
  const char* method;
  const char* path;
};
// Every route, the one table that registration, 405 answers and the test
// against the OpenAPI description read.
const std::vector<HttpRoute>& HttpRoutes();
// docs/openapi.json as built into the program.
const std::string& OpenApiJson();

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0: pick a free port (tests)
  std::string api_key;  // empty: no authentication
  // /metrics needs the key too (by default Prometheus scrapers, which carry
  // no API key, can read it; it holds no request content).
  bool metrics_require_key = false;
  size_t max_body_bytes = 8u << 20;
  // Connections open at once (more wait in the listen backlog). Threads are
  // started only for connections with a request being read or answered.
  int max_connections = 1024;
  // Connections one client address may hold (0: no limit); loopback clients
  // are not counted unless limit_loopback_connections.
  int max_connections_per_ip = 64;
  bool limit_loopback_connections = false;
  // A request's headers must arrive within header_timeout of its first
  // byte, its body within body_timeout after them; else 408.
  std::chrono::milliseconds header_timeout{10000};
  std::chrono::milliseconds body_timeout{60000};
};

class HttpServer {
 public:
  explicit HttpServer(const HttpOptions& options);
  ~HttpServer();

  // Binds and starts serving on a background thread. Until SetFrontend is
  // called, requests get 503 (loading).
  absl::Status Start();
  void SetFrontend(Frontend* frontend) { frontend_.store(frontend); }
  // From now on /health answers 503 with `reason` (a failed tensor-parallel
  // job, say), whatever the front-end's state.
  void SetUnhealthy(const std::string& reason);
  int port() const { return port_; }
  void Stop();

  // The (method, path) pairs registered with the library, for the test that
  // the table and the handlers agree.
  const std::vector<HttpRoute>& registered_routes() const { return registered_; }
  // Connections open, held by a worker, and worker threads alive.
  struct ConnectionStats {
    int open = 0, busy = 0, workers = 0;
  };
  ConnectionStats connection_stats() const;

 private:
  void Routes();
  std::vector<HttpRoute> registered_;
  HttpOptions options_;
  std::unique_ptr<httplib::Server> server_;
  std::atomic<Frontend*> frontend_{nullptr};
  std::mutex unhealthy_mu_;
  std::string unhealthy_;  // empty while healthy
  std::thread thread_;
  std::atomic<bool> listen_returned_{false};  // set when listen_after_bind returns
  std::atomic<int> open_streams_{0};          // streamed responses still being written
  int port_ = 0;
  // Response ids: a random prefix per server and a counter.
  uint64_t id_nonce_ = 0;
  std::atomic<uint64_t> next_id_{1};
};

}  // namespace gqa
