#include "server/http_server.h"

#include <httplib.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "server/connection_loop.h"
#include "server/http_connection.h"
#include "server/http_request.h"
#include "base/json_depth.h"

namespace gqa {
namespace {

using Json = nlohmann::json;
using http_request::BadField;
using http_request::ChatExtras;
using http_request::GenerateBody;
using http_request::Get;
using http_request::ParseGenerateBody;
using http_request::TokenIds;
using Clock = std::chrono::steady_clock;

int HttpStatus(const absl::Status& st) {
  switch (st.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition: return 400;
    case absl::StatusCode::kUnauthenticated: return 401;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kResourceExhausted: return 429;
    case absl::StatusCode::kUnavailable: return 503;
    case absl::StatusCode::kDeadlineExceeded: return 504;
    default: return 500;
  }
}

const char* ErrorType(int status) {
  switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable";
    default: return status < 500 ? "invalid_request_error" : "server_error";
  }
}

std::string ErrorBody(int status, const std::string& message, const std::string& param = "",
                      const std::string& code = "") {
  Json err = {{"message", message}, {"type", ErrorType(status)}, {"param", nullptr}, {"code", nullptr}};
  if (!param.empty()) err["param"] = param;
  if (!code.empty()) err["code"] = code;
  return Json{{"error", err}}.dump(-1, ' ', false, Json::error_handler_t::replace);
}

void SendError(httplib::Response& res, int status, const std::string& message, const std::string& param = "",
               const std::string& code = "") {
  res.status = status;
  res.set_content(ErrorBody(status, message, param, code), "application/json");
}

// Whether a request path is a route's (OpenAPI-style) path: a {parameter}
// stands for one or more characters, '/' included (model names hold them).
bool PathMatches(absl::string_view route, absl::string_view path) {
  const size_t brace = route.find('{');
  if (brace == absl::string_view::npos) return route == path;
  const absl::string_view suffix = route.substr(route.find('}', brace) + 1);
  return path.size() > brace + suffix.size() && absl::StartsWith(path, route.substr(0, brace)) &&
         absl::EndsWith(path, suffix);
}

// The methods a path answers ("" for no such path), for 405 and Allow.
std::string AllowedMethods(absl::string_view target) {
  const absl::string_view path = target.substr(0, target.find_first_of("?#"));
  std::string allow;
  for (const HttpRoute& r : HttpRoutes()) {
    if (!PathMatches(r.path, path)) continue;
    const std::string methods = std::string(r.method) == "GET" ? "GET, HEAD" : r.method;
    if (!absl::StrContains(allow, methods)) absl::StrAppend(&allow, allow.empty() ? "" : ", ", methods);
  }
  return allow;
}

// The connection whose request this thread is answering (for handlers that
// watch for the client going away).
thread_local HttpConnection* t_connection = nullptr;

// What is wrong with a body that is not JSON, and at which byte.
std::string JsonSyntaxError(const Json::parse_error& e) {
  std::string what = e.what();
  if (const size_t at = what.find("] "); at != std::string::npos) what.erase(0, at + 2);
  // The library quotes what it last read, which may be most of the body.
  if (const size_t at = what.find("; last read: '"); at != std::string::npos) {
    const size_t start = at + 14, end = what.find("'", start);
    if (end != std::string::npos && end - start > 40) what.replace(start, end - start, "..." + what.substr(end - 40, 40));
  }
  return absl::StrCat("the body is not valid JSON: ", what, " (byte offset ", e.byte, ")");
}

// Runs each task at once on the caller's thread: the accept loop hands every
// connection to the ConnectionLoop, which does not block.
class InlineQueue : public httplib::TaskQueue {
 public:
  explicit InlineQueue(std::function<void()> on_shutdown) : on_shutdown_(std::move(on_shutdown)) {}
  void enqueue(std::function<void()> fn) override { fn(); }
  void shutdown() override { on_shutdown_(); }

 private:
  std::function<void()> on_shutdown_;
};

// cpp-httplib behind HttpConnection: every request is read, checked and
// bounded there, then parsed and routed by the library. Connections live in
// a ConnectionLoop, which gives one a thread only while it has a request.
class FramedServer : public httplib::Server {
 public:
  FramedServer(const FramingLimits& limits, const ConnectionLimits& connection_limits) : limits_(limits) {
    auto stopping = [this] { return svr_sock_ == INVALID_SOCKET; };
    loop_ = std::make_unique<ConnectionLoop>(
        connection_limits, kKeepAliveMax, [this](HttpConnection& conn, size_t* left) { return Serve(conn, left); },
        [](HttpConnection& conn, const std::string& message) { WriteError(conn, 429, message, ""); }, stopping);
    new_task_queue = [this] { return new InlineQueue([this] { loop_->Shutdown(); }); };
  }
  ~FramedServer() override { loop_->Shutdown(); }
  ConnectionLoop& loop() { return *loop_; }

 private:
  static constexpr size_t kKeepAliveMax = 1000;

  // A whole answer written by hand (the request never reaches the library);
  // the connection closes after it.
  static void WriteError(HttpConnection& conn, int status, const std::string& message, const std::string& allow) {
    const std::string body = ErrorBody(status, message);
    const std::string head = absl::StrCat("HTTP/1.1 ", status, " ", StatusText(status),
                                          "\r\nContent-Type: application/json\r\nContent-Length: ", body.size(),
                                          "\r\nConnection: close\r\n", allow.empty() ? "" : "Allow: " + allow + "\r\n",
                                          "\r\n");
    conn.WriteAll(head.data(), head.size()) && conn.WriteAll(body.data(), body.size());
  }

  bool process_and_close_socket(socket_t sock) override {
    // Each streamed event is a small write: without TCP_NODELAY it waits for
    // the ACK of the previous one, which a keep-alive client delays by up to
    // 40 ms (measured: +40 ms TTFT with gqa-bench serve).
    int nodelay = 1;
    ::setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &nodelay, sizeof(nodelay));
    loop_->Add(sock);
    return true;
  }

  // The requests a ready connection has, pipelined ones included; true to
  // keep it open for the next one.
  bool Serve(HttpConnection& conn, size_t* left) {
    for (;;) {
      if (svr_sock_ == INVALID_SOCKET) return false;
      const HttpConnection::Arrival arrival = conn.Poll();
      if (arrival == HttpConnection::Arrival::kClosed) return false;
      if (arrival == HttpConnection::Arrival::kNothing) return true;
      if (*left == 0) return false;
      FramedRequest req;
      FramingError err;
      if (!conn.ReadRequest(limits_, &req, &err)) {
        if (err.status != 0) {
          WriteError(conn, err.status, err.message, "");
          conn.Linger(std::chrono::seconds(2));
        }
        return false;
      }
      if (req.method != "GET" && req.method != "HEAD" && req.method != "POST") {
        const std::string allow = AllowedMethods(req.target);
        WriteError(conn, allow.empty() ? 404 : 405,
                   allow.empty() ? absl::StrCat("no route for ", req.method, " ", req.target.substr(0, 200))
                                 : absl::StrCat(req.method, " is not allowed here; allowed: ", allow),
                   allow);
        return false;
      }
      --*left;
      CanonicalStream strm(conn, req.canonical);
      bool closed = false;
      t_connection = &conn;
      const bool ok = process_request(strm, *left == 0, closed, nullptr);
      t_connection = nullptr;
      if (!ok || closed) return false;
    }
  }

  FramingLimits limits_;
  std::unique_ptr<ConnectionLoop> loop_;
};

void SendStatus(httplib::Response& res, const absl::Status& st) {
  SendError(res, HttpStatus(st), std::string(st.message()));
}

const char* FinishName(FinishReason r) {
  switch (r) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kAborted: return "abort";
    default: return "error";
  }
}

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Text of one token for logprobs (empty without a tokenizer).
std::string TokenText(const Frontend& fe, int32_t id) {
  absl::StatusOr<std::string> t = fe.Detokenize({id});
  return t.ok() ? *t : std::string();
}

// One streamed request: deltas pushed by the engine thread, SSE chunks
// pulled by the connection's thread.
struct Stream {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> chunks;  // ready-to-send SSE payloads
  bool done = false;
  int64_t id = 0;
};

}  // namespace

namespace {
FramingLimits LimitsOf(const HttpOptions& o) {
  FramingLimits l;
  l.max_body_bytes = o.max_body_bytes;
  l.header_timeout = o.header_timeout;
  l.body_timeout = o.body_timeout;
  return l;
}

ConnectionLimits ConnectionLimitsOf(const HttpOptions& o) {
  ConnectionLimits l;
  l.max_connections = o.max_connections;
  l.max_per_ip = o.max_connections_per_ip;
  l.limit_loopback = o.limit_loopback_connections;
  return l;
}
}  // namespace

const std::vector<HttpRoute>& HttpRoutes() {
  static const std::vector<HttpRoute> routes = {
      {"GET", "/health"},
      {"GET", "/metrics"},
      {"GET", "/openapi.json"},
      {"GET", "/v1/models"},
      {"GET", "/v1/models/{model}"},
      {"POST", "/v1/completions"},
      {"POST", "/v1/chat/completions"},
      {"POST", "/tokenize"},
      {"POST", "/detokenize"},
  };
  return routes;
}

HttpServer::HttpServer(const HttpOptions& options)
    : options_(options), server_(std::make_unique<FramedServer>(LimitsOf(options), ConnectionLimitsOf(options))) {
  std::random_device rd;
  id_nonce_ = (uint64_t{rd()} << 32) ^ rd();
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::SetUnhealthy(const std::string& reason) {
  std::lock_guard<std::mutex> lock(unhealthy_mu_);
  unhealthy_ = reason.empty() ? "unhealthy" : reason;
}

void HttpServer::Stop() {
  if (!thread_.joinable()) return;
  // A stream whose request has finished may still be writing its last events
  // (the finish reason, [DONE]): let it, for a bounded time, before the
  // connections close.
  for (int i = 0; i < 5000 && open_streams_.load() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  // The library's stop() does nothing until its listen loop has begun: a stop
  // right after Start (a model that fails to load at once) would leave the
  // loop running and the join waiting for ever. Repeat until the loop ends.
  while (!listen_returned_.load()) {
    server_->stop();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  thread_.join();
}

HttpServer::ConnectionStats HttpServer::connection_stats() const {
  const ConnectionLoop::Stats s = static_cast<FramedServer&>(*server_).loop().stats();
  return ConnectionStats{s.open, s.busy, s.workers};
}

absl::Status HttpServer::Start() {
  server_->set_payload_max_length(options_.max_body_bytes);
  server_->set_keep_alive_max_count(1000);
  Routes();
  // The library listens with a backlog of 5, compiled into Debian's build;
  // many clients connecting at once would be refused. Keep the socket and
  // listen again on it with a deep backlog once it is bound.
  auto listen_fd = std::make_shared<int>(-1);
  server_->set_socket_options([listen_fd](socket_t fd) {
    int yes = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    *listen_fd = fd;
  });
  if (options_.port == 0) {
    port_ = server_->bind_to_any_port(options_.host);
    if (port_ <= 0) return absl::UnavailableError(absl::StrCat("cannot bind HTTP on ", options_.host));
  } else {
    if (!server_->bind_to_port(options_.host, options_.port)) {
      return absl::UnavailableError(absl::StrCat("cannot bind HTTP on ", options_.host, ":", options_.port));
    }
    port_ = options_.port;
  }
  if (*listen_fd >= 0) ::listen(*listen_fd, 4096);
  thread_ = std::thread([this] {
    server_->listen_after_bind();
    listen_returned_ = true;
  });
  // Serve only once the loop runs, so that a later stop() reaches it.
  while (!server_->is_running() && !listen_returned_.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return absl::OkStatus();
}

void HttpServer::Routes() {
  httplib::Server& svr = *server_;
  const std::string key = options_.api_key;
  const bool metrics_open = !options_.metrics_require_key;
  // Registers one route of HttpRoutes(): a {parameter} becomes a capture.
  auto handle = [this, &svr](const char* method, const char* path, httplib::Server::Handler handler) {
    std::string pattern = path;
    if (const size_t open = pattern.find('{'); open != std::string::npos) {
      // Any character, newlines included ('.' would not match a decoded %0A).
      pattern.replace(open, pattern.find('}', open) - open + 1, "([\\s\\S]+)");
    }
    if (std::string(method) == "GET") {
      svr.Get(pattern, std::move(handler));
    } else {
      svr.Post(pattern, std::move(handler));
    }
    registered_.push_back({method, path});
  };

  // Authentication and readiness run before every handler.
  svr.set_pre_routing_handler([this, key, metrics_open](const httplib::Request& req, httplib::Response& res) {
    // The description of the API is no secret and is there while loading.
    if (req.path == "/openapi.json") return httplib::Server::HandlerResponse::Unhandled;
    const bool open = req.path == "/health" || (metrics_open && req.path == "/metrics");
    if (!key.empty() && !open) {
      if (!BearerMatches(req.get_header_value("Authorization"), key)) {
        SendError(res, 401, "missing or invalid API key (send 'Authorization: Bearer <key>')", "", "invalid_api_key");
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    if (frontend_.load() == nullptr && req.path != "/metrics") {
      SendError(res, 503, "the model is loading");
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  svr.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 404) {
      const std::string allow = AllowedMethods(req.path);
      // A path whose route takes the method but did not match it (a
      // parameter it cannot hold) is not found, not a wrong method.
      const bool method_allowed = absl::StrContains(absl::StrCat(", ", allow, ","), absl::StrCat(", ", req.method, ","));
      if (allow.empty() || method_allowed) {
        SendError(res, 404, absl::StrCat("no route for ", req.method, " ", req.path.substr(0, 200)));
      } else {
        res.set_header("Allow", allow);
        SendError(res, 405, absl::StrCat(req.method, " is not allowed here; allowed: ", allow));
      }
    } else if (res.status == 413) {
      SendError(res, 413, "the request body is too large");
    } else {
      SendError(res, res.status, StatusText(res.status));
    }
  });
  svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    SendError(res, 500, "internal error");
  });

  handle("GET", "/openapi.json", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(OpenApiJson(), "application/json");
  });
  handle("GET", "/health", [this](const httplib::Request&, httplib::Response& res) {
    {
      std::lock_guard<std::mutex> lock(unhealthy_mu_);
      if (!unhealthy_.empty()) {
        SendError(res, 503, unhealthy_);
        return;
      }
    }
    Frontend* fe = frontend_.load();
    if (fe == nullptr || fe->draining()) {
      SendError(res, 503, fe == nullptr ? "the model is loading" : "the server is shutting down");
      return;
    }
    res.set_content("", "text/plain");
  });
  handle("GET", "/metrics", [this](const httplib::Request&, httplib::Response& res) {
    Frontend* fe = frontend_.load();
    res.set_content(fe ? fe->metrics().Render() : "", "text/plain; version=0.0.4");
  });
  auto model_json = [](const ModelInfo& info) {
    return Json{{"id", info.name}, {"object", "model"}, {"created", NowSeconds()}, {"owned_by", "gqa-serve"},
                {"max_model_len", info.max_model_len}};
  };
  handle("GET", "/v1/models", [this, model_json](const httplib::Request&, httplib::Response& res) {
    const Json m = model_json(frontend_.load()->info());
    res.set_content(Json{{"object", "list"}, {"data", {m}}}.dump(-1, ' ', false, Json::error_handler_t::replace), "application/json");
  });
  // What OpenAI clients' models.retrieve(id) asks for.
  handle("GET", "/v1/models/{model}", [this, model_json](const httplib::Request& req, httplib::Response& res) {
    const ModelInfo& info = frontend_.load()->info();
    const std::string id = req.matches[1];
    if (id != info.name) {
      return SendError(res, 404, absl::StrCat("The model `", id.substr(0, 200), "` does not exist."), "model",
                       "model_not_found");
    }
    res.set_content(model_json(info).dump(-1, ' ', false, Json::error_handler_t::replace), "application/json");
  });

  auto parse_body = [](const httplib::Request& req, httplib::Response& res, Json* out) {
    // The parser and every walk over the value recurse once per level.
    if (JsonDeeperThan(req.body)) {
      SendError(res, 400, absl::StrCat("the body nests arrays and objects deeper than ", kMaxJsonDepth, " levels"));
      return false;
    }
    try {
      *out = Json::parse(req.body);
    } catch (const Json::parse_error& e) {
      SendError(res, 400, JsonSyntaxError(e));
      return false;
    }
    if (!out->is_object()) {
      SendError(res, 400, absl::StrCat("the body must be a JSON object (it is a JSON ", out->type_name(), ")"));
      return false;
    }
    return true;
  };

  handle("POST", "/tokenize", [this, parse_body](const httplib::Request& req, httplib::Response& res) {
    Frontend& fe = *frontend_.load();
    Json j;
    if (!parse_body(req, res, &j)) return;
    try {
      absl::StatusOr<std::vector<int32_t>> ids;
      if (j.contains("messages")) {
        absl::StatusOr<ChatPrompt> chat = fe.RenderChatPrompt(j["messages"], ChatExtras(j));
        ids = chat.ok() ? fe.Tokenize(chat->text, false, /*parse_special_tokens=*/true, chat->literal_ranges)
                        : chat.status();
      } else {
        ids = fe.Tokenize(Get<std::string>(j, "prompt", ""), Get<bool>(j, "add_special_tokens", true));
      }
      if (!ids.ok()) return SendStatus(res, ids.status());
      res.set_content(Json{{"tokens", *ids}, {"count", ids->size()}, {"max_model_len", fe.info().max_model_len}}.dump(-1, ' ', false, Json::error_handler_t::replace),
                      "application/json");
    } catch (const BadField& b) {
      SendError(res, 400, b.message, b.field);
    }
  });
  handle("POST", "/detokenize", [this, parse_body](const httplib::Request& req, httplib::Response& res) {
    Frontend& fe = *frontend_.load();
    Json j;
    if (!parse_body(req, res, &j)) return;
    try {
      if (!j.contains("tokens") || !j["tokens"].is_array()) throw BadField{"tokens", "'tokens' must be a list of ids"};
      absl::StatusOr<std::string> text = fe.Detokenize(TokenIds(j["tokens"], "tokens"));
      if (!text.ok()) return SendStatus(res, text.status());
      res.set_content(Json{{"prompt", *text}}.dump(-1, ' ', false, Json::error_handler_t::replace), "application/json");
    } catch (const BadField& b) {
      SendError(res, 400, b.message, b.field);
    }
  });

  // Completions and chat completions share everything but the prompt and
  // the response shape.
  auto generate = [this, parse_body](const httplib::Request& req, httplib::Response& res, bool chat) {
    Frontend& fe = *frontend_.load();
    Json j;
    if (!parse_body(req, res, &j)) return;
    GenerateBody body;
    try {
      if (absl::Status st = ParseGenerateBody(j, chat, fe, &body); !st.ok()) return SendStatus(res, st);
    } catch (const BadField& b) {
      if (absl::StartsWith(b.message, "404:")) return SendError(res, 404, b.message.substr(4), b.field, "model_not_found");
      return SendError(res, 400, b.message, b.field);
    }
    ApiRequest& r = body.request;
    const bool stream = body.stream, include_usage = body.include_usage;
    const int logprobs = body.logprobs;

    // Unique for the server's lifetime; every chunk of a stream carries it.
    const std::string id = absl::StrFormat("%s%016x%08x", chat ? "chatcmpl-" : "cmpl-", id_nonce_, next_id_.fetch_add(1));
    const int64_t created = NowSeconds();
    const std::string model = fe.info().name;
    // Logprobs in the shape of each API.
    auto logprob_json = [&fe, chat](const std::vector<SampledToken>& toks) {
      if (chat) {
        Json content = Json::array();
        for (const SampledToken& t : toks) {
          Json top = Json::array();
          for (const auto& [tok, lp] : t.top_logprobs) top.push_back({{"token", TokenText(fe, tok)}, {"logprob", lp}});
          content.push_back({{"token", TokenText(fe, t.token)}, {"logprob", t.logprob}, {"top_logprobs", top}});
        }
        return Json{{"content", content}};
      }
      Json tokens = Json::array(), lps = Json::array(), tops = Json::array();
      for (const SampledToken& t : toks) {
        tokens.push_back(TokenText(fe, t.token));
        lps.push_back(t.logprob);
        Json top = Json::object();
        for (const auto& [tok, lp] : t.top_logprobs) top[TokenText(fe, tok)] = lp;
        tops.push_back(top);
      }
      return Json{{"tokens", tokens}, {"token_logprobs", lps}, {"top_logprobs", tops}};
    };
    auto ids_of = [](const std::vector<SampledToken>& toks) {
      std::vector<int32_t> ids;
      for (const SampledToken& t : toks) ids.push_back(t.token);
      return ids;
    };
    auto usage = [](const FinalResult& f) {
      return Json{{"prompt_tokens", f.prompt_tokens}, {"completion_tokens", f.completion_tokens},
                  {"total_tokens", f.prompt_tokens + f.completion_tokens},
                  {"prompt_tokens_details", {{"cached_tokens", f.cached_tokens}}}};
    };

    if (!stream) {
      // A client that closes its connection while it waits gets nothing:
      // abort its request at once so that its KV blocks come back.
      HttpConnection* conn = t_connection;
      absl::StatusOr<FinalResult> out =
          fe.Run(std::move(r), Clock::time_point::max(), [conn] { return conn != nullptr && conn->PeerClosed(); });
      if (!out.ok()) return SendStatus(res, out.status());
      if (out->reason == FinishReason::kError) return SendStatus(res, out->error);
      Json choice = {{"index", 0}, {"finish_reason", FinishName(out->reason)}, {"token_ids", ids_of(out->tokens)},
                     {"logprobs", logprobs > 0 ? logprob_json(out->tokens) : Json(nullptr)}};
      if (chat) {
        choice["message"] = {{"role", "assistant"}, {"content", out->text}};
      } else {
        choice["text"] = out->text;
      }
      Json body = {{"id", id}, {"object", chat ? "chat.completion" : "text_completion"}, {"created", created},
                   {"model", model}, {"choices", {choice}}, {"usage", usage(*out)}};
      res.set_content(body.dump(-1, ' ', false, Json::error_handler_t::replace), "application/json");
      return;
    }

    auto s = std::make_shared<Stream>();
    const char* object = chat ? "chat.completion.chunk" : "text_completion";
    auto chunk = [=](Json choice, const Json* usage_json) {
      Json body = {{"id", id}, {"object", object}, {"created", created}, {"model", model}, {"choices", Json::array()}};
      if (!choice.is_null()) body["choices"].push_back(std::move(choice));
      if (usage_json) body["usage"] = *usage_json;
      return absl::StrCat("data: ", body.dump(-1, ' ', false, Json::error_handler_t::replace), "\n\n");
    };
    if (chat) {
      s->chunks.push_back(chunk({{"index", 0}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"logprobs", nullptr},
                                 {"finish_reason", nullptr}},
                                nullptr));
    }
    absl::StatusOr<int64_t> started = fe.Start(
        std::move(r),
        [=](const StreamDelta& d) {
          Json choice = {{"index", 0}, {"finish_reason", nullptr}, {"token_ids", ids_of(d.tokens)},
                         {"logprobs", logprobs > 0 ? logprob_json(d.tokens) : Json(nullptr)}};
          if (chat) {
            choice["delta"] = {{"content", d.text}};
          } else {
            choice["text"] = d.text;
          }
          std::lock_guard<std::mutex> lock(s->mu);
          s->chunks.push_back(chunk(choice, nullptr));
          s->cv.notify_all();
        },
        [=](const FinalResult& f) {
          std::lock_guard<std::mutex> lock(s->mu);
          if (f.reason == FinishReason::kError) {
            s->chunks.push_back(absl::StrCat(
                "data: ", Json{{"error", {{"message", std::string(f.error.message())}, {"type", "server_error"}}}}.dump(-1, ' ', false, Json::error_handler_t::replace),
                "\n\n"));
          } else {
            Json choice = {{"index", 0}, {"finish_reason", FinishName(f.reason)}, {"logprobs", nullptr}};
            if (chat) {
              choice["delta"] = Json::object();
            } else {
              choice["text"] = "";
            }
            s->chunks.push_back(chunk(choice, nullptr));
            if (include_usage) {
              const Json u = usage(f);
              s->chunks.push_back(chunk(nullptr, &u));
            }
          }
          s->chunks.push_back("data: [DONE]\n\n");
          s->done = true;
          s->cv.notify_all();
        });
    if (!started.ok()) return SendStatus(res, started.status());
    s->id = *started;
    Frontend* fep = &fe;
    res.set_header("Cache-Control", "no-cache");
    ++open_streams_;
    res.set_chunked_content_provider(
        "text/event-stream",
        [s](size_t, httplib::DataSink& sink) {
          std::unique_lock<std::mutex> lock(s->mu);
          while (s->chunks.empty() && !s->done) {
            s->cv.wait_for(lock, std::chrono::milliseconds(100));
            if (!sink.is_writable()) return false;  // the client went away
          }
          while (!s->chunks.empty()) {
            std::string c = std::move(s->chunks.front());
            s->chunks.pop_front();
            lock.unlock();
            if (!sink.write(c.data(), c.size())) return false;
            lock.lock();
          }
          if (s->done) sink.done();
          return true;
        },
        [this, s, fep](bool success) {
          --open_streams_;
          bool done;
          {
            std::lock_guard<std::mutex> lock(s->mu);
            done = s->done;
          }
          if (!success || !done) fep->Cancel(s->id);  // a disconnected client's request is aborted
        });
  };
  handle("POST", "/v1/completions", [generate](const httplib::Request& req, httplib::Response& res) { generate(req, res, false); });
  handle("POST", "/v1/chat/completions", [generate](const httplib::Request& req, httplib::Response& res) { generate(req, res, true); });
}

}  // namespace gqa
