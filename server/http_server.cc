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
#include "server/http_connection.h"
#include "worker/json_depth.h"

namespace gqa {
namespace {

using Json = nlohmann::json;
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

// The methods a path answers ("" for no such path), for 405 and Allow.
std::string AllowedMethods(absl::string_view target) {
  const absl::string_view path = target.substr(0, target.find_first_of("?#"));
  if (path == "/health" || path == "/metrics" || path == "/v1/models" || absl::StartsWith(path, "/v1/models/")) {
    return "GET, HEAD";
  }
  if (path == "/v1/completions" || path == "/v1/chat/completions" || path == "/tokenize" || path == "/detokenize") {
    return "POST";
  }
  return "";
}

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

// cpp-httplib behind HttpConnection: every request is read, checked and
// bounded there, then parsed and routed by the library.
class FramedServer : public httplib::Server {
 public:
  explicit FramedServer(const FramingLimits& limits) : limits_(limits) {}

 private:
  static constexpr size_t kKeepAliveMax = 1000;
  static constexpr std::chrono::milliseconds kKeepAliveIdle{5000};

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
    HttpConnection conn(sock, [this] { return svr_sock_ == INVALID_SOCKET; });
    bool ret = true;
    for (size_t left = kKeepAliveMax; left > 0; --left) {
      if (svr_sock_ == INVALID_SOCKET || !conn.WaitForRequest(kKeepAliveIdle)) break;
      FramedRequest req;
      FramingError err;
      if (!conn.ReadRequest(limits_, &req, &err)) {
        if (err.status != 0) {
          WriteError(conn, err.status, err.message, "");
          conn.Linger(std::chrono::seconds(2));
        }
        break;
      }
      if (req.method != "GET" && req.method != "HEAD" && req.method != "POST") {
        const std::string allow = AllowedMethods(req.target);
        WriteError(conn, allow.empty() ? 404 : 405,
                   allow.empty() ? absl::StrCat("no route for ", req.method, " ", req.target.substr(0, 200))
                                 : absl::StrCat(req.method, " is not allowed here; allowed: ", allow),
                   allow);
        break;
      }
      CanonicalStream strm(conn, req.canonical);
      bool closed = false;
      ret = process_request(strm, left == 1, closed, nullptr);
      if (!ret || closed) break;
    }
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
    return ret;
  }

  FramingLimits limits_;
};

void SendStatus(httplib::Response& res, const absl::Status& st) {
  SendError(res, HttpStatus(st), std::string(st.message()));
}

// Field readers: a wrong type is a 400 naming the field.
struct BadField {
  std::string field, message;
};

template <typename T>
T Get(const Json& j, const char* field, T fallback) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return fallback;
  if constexpr (std::is_same_v<T, bool>) {
    if (!it->is_boolean()) throw BadField{field, absl::StrCat("'", field, "' must be a boolean")};
  } else if constexpr (std::is_integral_v<T>) {
    if (!it->is_number_integer()) throw BadField{field, absl::StrCat("'", field, "' must be an integer")};
    const int64_t v = it->get<int64_t>();
    if (v < std::numeric_limits<T>::min() || v > std::numeric_limits<T>::max()) {
      throw BadField{field, absl::StrCat("'", field, "' is out of range")};
    }
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!it->is_number()) throw BadField{field, absl::StrCat("'", field, "' must be a number")};
  } else {
    if (!it->is_string()) throw BadField{field, absl::StrCat("'", field, "' must be a string")};
  }
  return it->get<T>();
}

std::vector<int32_t> TokenIds(const Json& v, const char* field) {
  std::vector<int32_t> ids;
  for (const Json& e : v) {
    if (!e.is_number_integer() || e.get<int64_t>() < 0 || e.get<int64_t>() > INT32_MAX) {
      throw BadField{field, absl::StrCat("'", field, "' must hold non-negative integer token ids")};
    }
    ids.push_back(e.get<int32_t>());
  }
  return ids;
}

// The fields /v1/completions and /v1/chat/completions share.
void ParseCommon(const Json& j, const ModelInfo& info, ApiRequest* r, bool* stream, bool* include_usage) {
  if (j.contains("model") && !j["model"].is_null()) {
    const std::string model = Get<std::string>(j, "model", "");
    if (model != info.name) throw BadField{"model", "404:The model `" + model + "` does not exist."};
  }
  if (Get<int64_t>(j, "n", 1) != 1) throw BadField{"n", "only n=1 is supported"};
  if (Get<int64_t>(j, "best_of", 1) != 1) throw BadField{"best_of", "only best_of=1 is supported"};
  if (Get<bool>(j, "echo", false)) throw BadField{"echo", "echo is not supported"};
  const int64_t max_tokens = Get<int64_t>(j, "max_tokens", Get<int64_t>(j, "max_completion_tokens", 16));
  if (max_tokens < 1 || max_tokens > info.max_model_len) {
    throw BadField{"max_tokens", absl::StrCat("'max_tokens' must be in 1..", info.max_model_len)};
  }
  r->gen.max_tokens = static_cast<int>(max_tokens);
  SamplingParams& s = r->gen.sampling;
  s.temperature = Get<double>(j, "temperature", 1.0);
  s.top_p = Get<double>(j, "top_p", 1.0);
  s.top_k = Get<int>(j, "top_k", 0);
  if (s.top_k == -1) s.top_k = 0;  // vLLM's spelling of "off"
  s.min_p = Get<double>(j, "min_p", 0.0);
  s.presence_penalty = Get<double>(j, "presence_penalty", 0.0);
  s.frequency_penalty = Get<double>(j, "frequency_penalty", 0.0);
  s.repetition_penalty = Get<double>(j, "repetition_penalty", 1.0);
  if (j.contains("seed") && !j["seed"].is_null()) s.seed = static_cast<uint64_t>(Get<int64_t>(j, "seed", 0));
  r->gen.ignore_eos = Get<bool>(j, "ignore_eos", false);
  if (j.contains("stop_token_ids") && !j["stop_token_ids"].is_null()) {
    if (!j["stop_token_ids"].is_array()) throw BadField{"stop_token_ids", "'stop_token_ids' must be a list"};
    r->gen.stop_token_ids = TokenIds(j["stop_token_ids"], "stop_token_ids");
  }
  if (j.contains("stop") && !j["stop"].is_null()) {
    const Json& stop = j["stop"];
    if (stop.is_string()) {
      r->stop.push_back(stop.get<std::string>());
    } else if (stop.is_array()) {
      for (const Json& e : stop) {
        if (!e.is_string()) throw BadField{"stop", "'stop' must be a string or a list of strings"};
        r->stop.push_back(e.get<std::string>());
      }
    } else {
      throw BadField{"stop", "'stop' must be a string or a list of strings"};
    }
    for (const std::string& s : r->stop) {
      if (s.empty()) throw BadField{"stop", "stop strings must not be empty"};
    }
  }
  r->request_id = Get<std::string>(j, "request_id", "");
  (void)Get<std::string>(j, "user", "");
  *stream = Get<bool>(j, "stream", false);
  *include_usage = false;
  if (j.contains("stream_options") && j["stream_options"].is_object()) {
    *include_usage = Get<bool>(j["stream_options"], "include_usage", false);
  }
}

// Template variables a chat request may pass: `tools`, and the entries of
// `chat_template_kwargs` (e.g. enable_thinking), as vLLM accepts them.
Json ChatExtras(const Json& j) {
  Json extra = Json::object();
  if (j.contains("tools") && !j["tools"].is_null()) extra["tools"] = j["tools"];
  if (j.contains("chat_template_kwargs") && j["chat_template_kwargs"].is_object()) {
    for (auto it = j["chat_template_kwargs"].begin(); it != j["chat_template_kwargs"].end(); ++it) {
      extra[it.key()] = it.value();
    }
  }
  return extra;
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
}  // namespace

HttpServer::HttpServer(const HttpOptions& options)
    : options_(options), server_(std::make_unique<FramedServer>(LimitsOf(options))) {
  std::random_device rd;
  id_nonce_ = (uint64_t{rd()} << 32) ^ rd();
}

HttpServer::~HttpServer() { Stop(); }

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

absl::Status HttpServer::Start() {
  const int threads = options_.max_connections;
  server_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
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

  // Authentication and readiness run before every handler.
  svr.set_pre_routing_handler([this, key, metrics_open](const httplib::Request& req, httplib::Response& res) {
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
      if (allow.empty()) {
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

  svr.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    Frontend* fe = frontend_.load();
    if (fe == nullptr || fe->draining()) {
      SendError(res, 503, fe == nullptr ? "the model is loading" : "the server is shutting down");
      return;
    }
    res.set_content("", "text/plain");
  });
  svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    Frontend* fe = frontend_.load();
    res.set_content(fe ? fe->metrics().Render() : "", "text/plain; version=0.0.4");
  });
  auto model_json = [](const ModelInfo& info) {
    return Json{{"id", info.name}, {"object", "model"}, {"created", NowSeconds()}, {"owned_by", "gqa-serve"},
                {"max_model_len", info.max_model_len}};
  };
  svr.Get("/v1/models", [this, model_json](const httplib::Request&, httplib::Response& res) {
    const Json m = model_json(frontend_.load()->info());
    res.set_content(Json{{"object", "list"}, {"data", {m}}}.dump(-1, ' ', false, Json::error_handler_t::replace), "application/json");
  });
  // What OpenAI clients' models.retrieve(id) asks for.
  svr.Get(R"(/v1/models/(.+))", [this, model_json](const httplib::Request& req, httplib::Response& res) {
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

  svr.Post("/tokenize", [this, parse_body](const httplib::Request& req, httplib::Response& res) {
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
  svr.Post("/detokenize", [this, parse_body](const httplib::Request& req, httplib::Response& res) {
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
    ApiRequest r;
    bool stream = false, include_usage = false;
    int logprobs = 0;
    try {
      ParseCommon(j, fe.info(), &r, &stream, &include_usage);
      if (chat) {
        if (!j.contains("messages") || !j["messages"].is_array() || j["messages"].empty()) {
          throw BadField{"messages", "'messages' must be a non-empty list"};
        }
        for (const Json& m : j["messages"]) {
          if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
            throw BadField{"messages", "every message needs a string 'role'"};
          }
        }
        absl::StatusOr<ChatPrompt> prompt = fe.RenderChatPrompt(j["messages"], ChatExtras(j));
        if (!prompt.ok()) return SendStatus(res, prompt.status());
        r.prompt_text = std::move(prompt->text);
        r.literal_ranges = std::move(prompt->literal_ranges);
        r.add_special_tokens = false;  // the template writes BOS itself
        r.parse_special_tokens = true;  // and its role markers are special tokens
        const int top = Get<int>(j, "top_logprobs", 0);
        if (top < 0 || top > 20) throw BadField{"top_logprobs", "'top_logprobs' must be in 0..20"};
        if (Get<bool>(j, "logprobs", false)) logprobs = std::max(1, top);
      } else {
        if (!j.contains("prompt")) throw BadField{"prompt", "'prompt' is required"};
        const Json& p = j["prompt"];
        if (p.is_string()) {
          r.prompt_text = p.get<std::string>();
        } else if (p.is_array() && !p.empty() && p[0].is_number()) {
          r.prompt_ids = TokenIds(p, "prompt");
        } else if (p.is_array() && p.size() == 1 && p[0].is_string()) {
          r.prompt_text = p[0].get<std::string>();
        } else if (p.is_array() && p.size() == 1 && p[0].is_array()) {
          r.prompt_ids = TokenIds(p[0], "prompt");
        } else {
          throw BadField{"prompt", "'prompt' must be a string, a list of token ids, or a list of one of those"};
        }
        r.add_special_tokens = Get<bool>(j, "add_special_tokens", true);
        logprobs = Get<int>(j, "logprobs", 0);
        if (logprobs < 0 || logprobs > 20) throw BadField{"logprobs", "'logprobs' must be in 0..20"};
      }
      r.gen.sampling.logprobs = logprobs;
    } catch (const BadField& b) {
      if (absl::StartsWith(b.message, "404:")) return SendError(res, 404, b.message.substr(4), b.field, "model_not_found");
      return SendError(res, 400, b.message, b.field);
    }

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
                  {"total_tokens", f.prompt_tokens + f.completion_tokens}};
    };

    if (!stream) {
      absl::StatusOr<FinalResult> out = fe.Run(std::move(r), Clock::time_point::max());
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
  svr.Post("/v1/completions", [generate](const httplib::Request& req, httplib::Response& res) { generate(req, res, false); });
  svr.Post("/v1/chat/completions", [generate](const httplib::Request& req, httplib::Response& res) { generate(req, res, true); });
}

}  // namespace gqa
