// Prompts, and the HTTP (SSE) and gRPC streaming clients of gqa-bench serve.
#include "bench/serve_client.h"

#include <httplib.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gqa/v1/gqa.grpc.pb.h"
#include "base/common.h"
#include "nlohmann/json.hpp"

namespace gqa {

using Json = nlohmann::json;

double SteadySeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

namespace {

// Words for text prompts: common English words, so that the tokenizer
// gives about one token per word.
const char* const kWords[] = {
    "the",   "of",    "and",   "to",    "in",    "is",    "you",   "that",  "it",    "he",    "was",   "for",
    "on",    "are",   "as",    "with",  "his",   "they",  "at",    "be",    "this",  "have",  "from",  "or",
    "one",   "had",   "by",    "word",  "but",   "not",   "what",  "all",   "were",  "we",    "when",  "your",
    "can",   "said",  "there", "use",   "an",    "each",  "which", "she",   "do",    "how",   "their", "if",
    "will",  "up",    "other", "about", "out",   "many",  "then",  "them",  "these", "so",    "some",  "her",
    "would", "make",  "like",  "him",   "into",  "time",  "has",   "look",  "two",   "more",  "write", "go",
    "see",   "number", "no",   "way",   "could", "people", "my",   "than",  "first", "water", "been",  "call"};

absl::StatusOr<std::vector<Prompt>> LoadDataset(const std::string& path, int64_t default_output) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open dataset ", path));
  std::vector<Prompt> out;
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    Json j;
    try {
      j = Json::parse(line);
    } catch (const Json::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", line_no, ": not JSON: ", e.what()));
    }
    Prompt p;
    p.max_tokens = default_output;
    try {
      const Json& pr = j.contains("prompt") ? j["prompt"] : j.value("prompt_ids", Json());
      if (pr.is_string()) {
        p.text = pr.get<std::string>();
      } else if (pr.is_array() && !pr.empty()) {
        p.ids = pr.get<std::vector<int32_t>>();
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ":", line_no, ": needs \"prompt\" (text or token ids) or \"prompt_ids\""));
      }
      if (j.contains("max_tokens")) p.max_tokens = j["max_tokens"].get<int64_t>();
      if (j.contains("output_len")) p.max_tokens = j["output_len"].get<int64_t>();
    } catch (const Json::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", line_no, ": ", e.what()));
    }
    out.push_back(std::move(p));
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat("dataset ", path, " has no prompts"));
  return out;
}

}  // namespace

absl::StatusOr<Workload> Workload::Create(const WorkloadOptions& o) {
  Workload w;
  w.o_ = o;
  if (!o.dataset.empty()) {
    ASSIGN_OR_RETURN(w.prompts_, LoadDataset(o.dataset, o.output_len));
    return w;
  }
  if (o.kind != "ids" && o.kind != "text") return absl::InvalidArgumentError("--prompt-kind must be ids or text");
  if (o.input_len < 1 || o.output_len < 1) return absl::InvalidArgumentError("--input-len and --output-len must be >= 1");
  if (o.kind == "ids" && o.vocab_size < 4) return absl::InvalidArgumentError("--vocab-size must be at least 4");
  // A pool of distinct prompts, cycled: 1024 is more than any level sends
  // at once, so no two requests in flight share a prompt (no prefix reuse
  // beyond shared_prefix_len).
  if (o.shared_prefix_len < 0) return absl::InvalidArgumentError("--shared-prefix-len must be >= 0");
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<int32_t> id(3, static_cast<int32_t>(std::max<int64_t>(o.vocab_size, 4) - 1));
  std::uniform_int_distribution<size_t> word(0, std::size(kWords) - 1);
  // Appends n random ids or words to p.
  auto append = [&](Prompt& p, int64_t n) {
    for (int64_t t = 0; t < n; ++t) {
      if (o.kind == "ids") {
        p.ids.push_back(id(rng));
      } else {
        absl::StrAppend(&p.text, p.text.empty() ? "" : " ", kWords[word(rng)]);
      }
    }
  };
  Prompt prefix;
  append(prefix, o.shared_prefix_len);
  prefix.shared_len = o.shared_prefix_len;
  for (int i = 0; i < 1024; ++i) {
    Prompt p = prefix;
    p.max_tokens = o.output_len;
    append(p, o.input_len);
    w.prompts_.push_back(std::move(p));
  }
  return w;
}

Prompt Workload::Get(int64_t i) const { return prompts_[static_cast<size_t>(i) % prompts_.size()]; }

absl::StatusOr<Endpoint> ParseEndpoint(const std::string& url) {
  Endpoint e;
  absl::string_view rest = url;
  if (absl::ConsumePrefix(&rest, "http://")) {
    e.protocol = Endpoint::Protocol::kHttp;
  } else if (absl::ConsumePrefix(&rest, "grpc://")) {
    e.protocol = Endpoint::Protocol::kGrpc;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--url must be http://HOST:PORT or grpc://HOST:PORT, got '", url, "'"));
  }
  absl::ConsumeSuffix(&rest, "/");
  absl::ConsumeSuffix(&rest, "/v1");  // an OpenAI base URL works too
  const size_t colon = rest.rfind(':');
  if (colon == absl::string_view::npos || !absl::SimpleAtoi(rest.substr(colon + 1), &e.port) || e.port <= 0 ||
      e.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--url needs a port: '", url, "'"));
  }
  e.host = std::string(rest.substr(0, colon));
  if (e.host.empty()) return absl::InvalidArgumentError(absl::StrCat("--url needs a host: '", url, "'"));
  return e;
}

absl::StatusOr<std::string> HttpGet(const std::string& host, int port, const std::string& path, double timeout_s) {
  httplib::Client cli(host, port);
  cli.set_tcp_nodelay(true);
  const auto t = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::duration<double>(timeout_s));
  cli.set_connection_timeout(t);
  cli.set_read_timeout(t);
  httplib::Result r = cli.Get(path.c_str());
  if (!r) return absl::UnavailableError(absl::StrCat("GET ", path, ": ", httplib::to_string(r.error())));
  if (r->status != 200) return absl::UnavailableError(absl::StrCat("GET ", path, ": status ", r->status));
  return r->body;
}

namespace {

std::string KindOfStatus(int status) {
  if (status == 429) return "http_429";
  if (status >= 500) return "http_5xx";
  return "http_4xx";
}

// POST /v1/completions with "stream": true; tokens are counted from each
// chunk's token_ids and timed on arrival.
class HttpClient : public ServeClient {
 public:
  HttpClient(const Endpoint& e, const RequestOptions& r) : e_(e), r_(r), cli_(e.host, e.port) {
    cli_.set_keep_alive(true);
    // Without it the body, written after the headers, waits for the server's
    // delayed ACK (Nagle): ~40-80 ms added to every TTFT on loopback.
    cli_.set_tcp_nodelay(true);
    cli_.set_connection_timeout(std::chrono::seconds(10));
  }

  void Send(const Prompt& p, double timeout_s, RequestRecord* rec) override {
    Json body = {{"max_tokens", p.max_tokens}, {"stream", true}, {"stream_options", {{"include_usage", true}}},
                 {"ignore_eos", r_.ignore_eos}, {"temperature", r_.temperature}};
    if (!p.ids.empty()) {
      body["prompt"] = p.ids;
    } else {
      body["prompt"] = p.text;
    }
    if (!e_.model.empty()) body["model"] = e_.model;
    rec->prompt_tokens = static_cast<int64_t>(p.ids.size());
    const double start = rec->start_s;
    cli_.set_read_timeout(std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::duration<double>(timeout_s)));

    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.set_header("Content-Type", "application/json");
    req.set_header("Accept", "text/event-stream");
    if (!e_.api_key.empty()) req.set_header("Authorization", "Bearer " + e_.api_key);
    req.body = body.dump();
    int status = 0;
    bool done = false, timed_out = false;
    std::string pending, error_body, stream_error;
    double last_token = 0;
    req.response_handler = [&](const httplib::Response& res) {
      status = res.status;
      return true;
    };
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      const double now = SteadySeconds();
      if (now - start > timeout_s) {
        timed_out = true;
        return false;
      }
      if (status != 200) {
        error_body.append(data, n);
        return true;
      }
      pending.append(data, n);
      // Server-sent events end with a blank line.
      for (size_t end; (end = pending.find("\n\n")) != std::string::npos;) {
        const std::string event = pending.substr(0, end);
        pending.erase(0, end + 2);
        for (absl::string_view line : absl::StrSplit(event, '\n')) {
          if (!absl::ConsumePrefix(&line, "data:")) continue;
          line = absl::StripLeadingAsciiWhitespace(line);
          if (line == "[DONE]") {
            done = true;
            continue;
          }
          Json j = Json::parse(line, nullptr, false);
          if (j.is_discarded()) continue;
          if (j.contains("error")) {
            stream_error = j["error"].value("message", "error event");
            continue;
          }
          if (j.contains("usage") && j["usage"].is_object()) {
            const Json& u = j["usage"];
            rec->prompt_tokens = u.value("prompt_tokens", rec->prompt_tokens);
            if (u.contains("prompt_tokens_details") && u["prompt_tokens_details"].is_object()) {
              rec->cached_tokens = u["prompt_tokens_details"].value("cached_tokens", int64_t{0});
            }
          }
          if (!j.contains("choices") || !j["choices"].is_array() || j["choices"].empty()) continue;
          const Json& c = j["choices"][0];
          const size_t k = c.contains("token_ids") && c["token_ids"].is_array() ? c["token_ids"].size() : 0;
          if (k == 0) continue;
          if (rec->output_tokens == 0) {
            rec->ttft_s = now - start;
            for (size_t i = 1; i < k; ++i) rec->itl_s.push_back(0);
          } else {
            const double gap = (now - last_token) / double(k);
            for (size_t i = 0; i < k; ++i) rec->itl_s.push_back(gap);
          }
          last_token = now;
          rec->output_tokens += static_cast<int64_t>(k);
          for (const Json& id : c["token_ids"]) {
            if (id.is_number_integer()) rec->output_ids.push_back(id.get<int32_t>());
          }
        }
      }
      return true;
    };
    httplib::Response res;
    httplib::Error err = httplib::Error::Success;
    const bool sent = cli_.send(req, res, err);
    rec->e2e_s = SteadySeconds() - start;
    if (status == 0 && res.status > 0) status = res.status;
    if (timed_out || (!sent && rec->e2e_s >= timeout_s)) {
      rec->error_kind = "timeout";
      rec->error_message = absl::StrCat("no end within ", timeout_s, " s");
    } else if (status != 0 && status != 200) {
      rec->error_kind = KindOfStatus(status);
      rec->error_message = absl::StrCat("HTTP ", status, ": ", error_body.substr(0, 200));
    } else if (!sent) {
      rec->error_kind = "disconnect";
      rec->error_message = httplib::to_string(err);
    } else if (!stream_error.empty()) {
      rec->error_kind = "http_5xx";  // an error event inside a 200 stream: the server failed the request
      rec->error_message = stream_error;
    } else if (!done) {
      rec->error_kind = "disconnect";
      rec->error_message = "the stream ended without [DONE]";
    } else {
      rec->ok = true;
    }
    if (!rec->ok) cli_.stop();  // start the next request on a fresh connection
  }

 private:
  Endpoint e_;
  RequestOptions r_;
  httplib::Client cli_;
};

class HttpFactory : public ClientFactory {
 public:
  HttpFactory(const Endpoint& e, const RequestOptions& r) : e_(e), r_(r) {}
  std::unique_ptr<ServeClient> NewClient() override { return std::make_unique<HttpClient>(e_, r_); }

 private:
  Endpoint e_;
  RequestOptions r_;
};

// gqa.v1.Generation/GenerateStream; tokens from each message's token_ids.
class GrpcClient : public ServeClient {
 public:
  GrpcClient(gqa::v1::Generation::Stub* stub, const Endpoint& e, const RequestOptions& r)
      : stub_(stub), e_(e), r_(r) {}

  void Send(const Prompt& p, double timeout_s, RequestRecord* rec) override {
    gqa::v1::GenerateRequest req;
    if (!p.ids.empty()) {
      for (int32_t id : p.ids) req.mutable_token_ids()->add_ids(id);
    } else {
      req.set_text(p.text);
    }
    req.set_max_tokens(static_cast<uint32_t>(p.max_tokens));
    req.mutable_sampling()->set_temperature(static_cast<float>(r_.temperature));
    req.set_ignore_eos(r_.ignore_eos);
    rec->prompt_tokens = static_cast<int64_t>(p.ids.size());
    const double start = rec->start_s;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::duration<double>(timeout_s)));
    if (!e_.api_key.empty()) ctx.AddMetadata("authorization", "Bearer " + e_.api_key);
    std::unique_ptr<grpc::ClientReader<gqa::v1::GenerateStreamResponse>> reader = stub_->GenerateStream(&ctx, req);
    gqa::v1::GenerateStreamResponse msg;
    double last_token = 0;
    bool finished = false;
    while (reader->Read(&msg)) {
      const double now = SteadySeconds();
      const int k = msg.token_ids_size();
      if (k > 0) {
        if (rec->output_tokens == 0) {
          rec->ttft_s = now - start;
          for (int i = 1; i < k; ++i) rec->itl_s.push_back(0);
        } else {
          for (int i = 0; i < k; ++i) rec->itl_s.push_back((now - last_token) / k);
        }
        last_token = now;
        rec->output_tokens += k;
        rec->output_ids.insert(rec->output_ids.end(), msg.token_ids().begin(), msg.token_ids().end());
      }
      if (msg.has_usage()) {
        rec->prompt_tokens = msg.usage().prompt_tokens();
        rec->cached_tokens = msg.usage().cached_tokens();
      }
      if (msg.finish_reason() != gqa::v1::FINISH_REASON_UNSPECIFIED) finished = true;
    }
    const grpc::Status st = reader->Finish();
    rec->e2e_s = SteadySeconds() - start;
    if (st.ok() && finished) {
      rec->ok = true;
      return;
    }
    rec->error_message = st.ok() ? "the stream ended without a finish reason" : st.error_message();
    switch (st.error_code()) {
      case grpc::StatusCode::RESOURCE_EXHAUSTED: rec->error_kind = "http_429"; break;
      case grpc::StatusCode::DEADLINE_EXCEEDED: rec->error_kind = "timeout"; break;
      case grpc::StatusCode::INVALID_ARGUMENT:
      case grpc::StatusCode::NOT_FOUND:
      case grpc::StatusCode::UNAUTHENTICATED:
      case grpc::StatusCode::PERMISSION_DENIED:
      case grpc::StatusCode::FAILED_PRECONDITION:
      case grpc::StatusCode::OUT_OF_RANGE: rec->error_kind = "http_4xx"; break;
      case grpc::StatusCode::OK:
      case grpc::StatusCode::UNAVAILABLE:
      case grpc::StatusCode::CANCELLED: rec->error_kind = "disconnect"; break;
      default: rec->error_kind = "http_5xx"; break;
    }
  }

 private:
  gqa::v1::Generation::Stub* stub_;
  Endpoint e_;
  RequestOptions r_;
};

class GrpcFactory : public ClientFactory {
 public:
  GrpcFactory(const Endpoint& e, const RequestOptions& r) : e_(e), r_(r) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);
    channel_ = grpc::CreateCustomChannel(absl::StrCat(e.host, ":", e.port), grpc::InsecureChannelCredentials(), args);
    stub_ = gqa::v1::Generation::NewStub(channel_);
  }
  std::unique_ptr<ServeClient> NewClient() override { return std::make_unique<GrpcClient>(stub_.get(), e_, r_); }

 private:
  Endpoint e_;
  RequestOptions r_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<gqa::v1::Generation::Stub> stub_;
};

}  // namespace

std::unique_ptr<ClientFactory> MakeClientFactory(const Endpoint& e, const RequestOptions& r) {
  if (e.protocol == Endpoint::Protocol::kGrpc) return std::make_unique<GrpcFactory>(e, r);
  return std::make_unique<HttpFactory>(e, r);
}

}  // namespace gqa
