// The front-ends end to end over loopback: HTTP (OpenAI shape, SSE) and gRPC
// give the tokens gqa-generate gives; streaming concatenates to the unary
// result; concurrent requests get what they get alone; deadlines, cancels
// and disconnects free their blocks; bad input gets its 4xx / gRPC code;
// overload gives 429; metrics move.
#include <httplib.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <set>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "gqa/v1/gqa.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "server/grpc_server.h"
#include "server/http_server.h"
#include "bench/server_process.h"
#include "tests/test_util.h"
#include "worker/synthetic_model.h"

namespace gqa {
namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;

// A small random-weight model with the real Mistral tokenizer (32000 ids).
const std::string& ModelDir() {
  static const std::string dir = [] {
    SyntheticModelSpec s;
    s.layers = 1;
    s.hidden = 32;
    s.heads = 4;
    s.kv_heads = 2;
    s.intermediate = 48;
    s.vocab = 32000;
    s.dtype = DType::kBF16;
    s.max_position = 512;
    s.seed = 5;
    const std::string d = testing::ProcessTempDir("gqa_server_test_model");
    EXPECT_TRUE(WriteSyntheticModel(s, d).ok());
    fs::copy_file(fs::path(GQA_TOKENIZERS_DIR) / "mistral" / "tokenizer.json", fs::path(d) / "tokenizer.json",
                  fs::copy_options::overwrite_existing);
    // The shipped Mistral tokenizer_config.json has no chat template: add
    // Mistral's own (tests/fixtures/tokenizer/templates/mistral.jinja).
    std::ifstream cfg_in(fs::path(GQA_TOKENIZERS_DIR) / "mistral" / "tokenizer_config.json");
    Json cfg = Json::parse(cfg_in);
    std::ifstream tpl(testing::FixturePath("tokenizer/templates/mistral.jinja"));
    cfg["chat_template"] = std::string(std::istreambuf_iterator<char>(tpl), {});
    std::ofstream(fs::path(d) / "tokenizer_config.json") << cfg.dump(2);
    return d;
  }();
  return dir;
}

struct ServerSetup {
  int tp = 2;
  int blocks = 512;
  int max_seqs = 64;
  int max_queued = 256;
  std::string api_key;
  bool tokenizer = true;
  bool metrics_require_key = false;
  std::chrono::milliseconds header_timeout{10000}, body_timeout{60000};
  bool log_json = false;
  bool special_tokens_in_content = true;
  std::string model_name = "test-model";
  int max_connections_per_ip = 64;
  bool limit_loopback_connections = false;
};

// One server: engine, frontend, HTTP and gRPC on free loopback ports.
class TestServer {
 public:
  explicit TestServer(const ServerSetup& setup) {
    ExecutorOptions eo;
    eo.tp = setup.tp;
    eo.threads_per_rank = 1;
    eo.num_kv_blocks = setup.blocks;
    eo.block_size = 8;
    auto ex = Executor::Open(ModelDir(), eo);
    EXPECT_TRUE(ex.ok()) << ex.status();
    EngineOptions o;
    o.max_num_seqs = setup.max_seqs;
    o.seed = 1;
    auto engine = std::make_unique<Engine>(std::move(*ex), o);
    std::unique_ptr<Tokenizer> tok;
    if (setup.tokenizer) {
      auto t = Tokenizer::Load(ModelDir());
      EXPECT_TRUE(t.ok()) << t.status();
      tok = std::move(*t);
    }
    FrontendOptions fo;
    fo.served_model_name = setup.model_name;
    fo.max_queued_requests = setup.max_queued;
    fo.log_json = setup.log_json;
    fo.special_tokens_in_content = setup.special_tokens_in_content;
    frontend_ = std::make_unique<Frontend>(std::move(engine), std::move(tok), fo);
    HttpOptions ho;
    ho.port = 0;
    ho.api_key = setup.api_key;
    ho.metrics_require_key = setup.metrics_require_key;
    ho.max_body_bytes = 1 << 20;
    ho.header_timeout = setup.header_timeout;
    ho.body_timeout = setup.body_timeout;
    ho.max_connections_per_ip = setup.max_connections_per_ip;
    ho.limit_loopback_connections = setup.limit_loopback_connections;
    http_ = std::make_unique<HttpServer>(ho);
    EXPECT_TRUE(http_->Start().ok());
    http_->SetFrontend(frontend_.get());
    GrpcOptions go;
    go.port = 0;
    go.api_key = setup.api_key;
    grpc_ = std::make_unique<GrpcServer>(go, frontend_.get());
    EXPECT_TRUE(grpc_->Start().ok());
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(grpc_->port()), grpc::InsecureChannelCredentials());
    stub_ = v1::Generation::NewStub(channel_);
  }
  ~TestServer() {
    grpc_->Shutdown();
    http_->Stop();
  }
  httplib::Client Http() const {
    httplib::Client c("127.0.0.1", http_->port());
    c.set_read_timeout(60, 0);
    return c;
  }
  int http_port() const { return http_->port(); }
  int grpc_port() const { return grpc_->port(); }
  v1::Generation::Stub& Grpc() { return *stub_; }
  std::shared_ptr<grpc::Channel> channel() { return channel_; }
  Frontend& frontend() { return *frontend_; }
  HttpServer& http() { return *http_; }
  int free_blocks() const { return frontend_->engine().Stats().free_blocks; }
  int total_blocks() const { return frontend_->engine().Stats().total_blocks; }
  // Waits until every block is free again (finishing is asynchronous).
  bool WaitAllFree() {
    for (int i = 0; i < 500; ++i) {
      if (free_blocks() == total_blocks() && frontend_->inflight() == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

 private:
  std::unique_ptr<Frontend> frontend_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<GrpcServer> grpc_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Generation::Stub> stub_;
};

TestServer& Shared() {
  static TestServer* s = new TestServer(ServerSetup{});
  return *s;
}

// One loopback connection for bytes that httplib's client will not send.
class RawConnection {
 public:
  explicit RawConnection(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  }
  ~RawConnection() { close(fd_); }
  int fd() const { return fd_; }
  bool Send(const std::string& data) {
    for (size_t at = 0; at < data.size();) {
      const ssize_t n = send(fd_, data.data() + at, data.size() - at, MSG_NOSIGNAL);
      if (n <= 0) return false;
      at += static_cast<size_t>(n);
    }
    return true;
  }
  // True once the server has sent something (or closed).
  bool Readable(int ms = 0) {
    pollfd p{fd_, POLLIN, 0};
    return poll(&p, 1, ms) > 0;
  }
  // Everything until the server closes, or `timeout` passes.
  std::string ReadAll(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    std::string out;
    const auto end = std::chrono::steady_clock::now() + timeout;
    char buf[65536];
    while (std::chrono::steady_clock::now() < end) {
      if (!Readable(50)) continue;
      const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }

 private:
  int fd_ = -1;
};

// The status of the first response in `raw` (0 if none).
int StatusOf(const std::string& raw) { return raw.size() > 12 && raw.rfind("HTTP/1.1 ", 0) == 0 ? std::stoi(raw.substr(9, 3)) : 0; }

size_t Count(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + 1)) ++n;
  return n;
}

Json PostJson(TestServer& s, const std::string& path, const Json& body, int* status = nullptr) {
  auto res = s.Http().Post(path, body.dump(), "application/json");
  EXPECT_TRUE(res) << "no HTTP response";
  if (!res) return Json();
  if (status) *status = res->status;
  return Json::parse(res->body, nullptr, false);
}

std::vector<int32_t> Ids(const Json& choice) { return choice["token_ids"].get<std::vector<int32_t>>(); }

// Server-sent events of a streamed completion: (concatenated text, ids, finish reason, saw [DONE]).
struct SseResult {
  std::string text;
  std::vector<int32_t> ids;
  std::string finish;
  bool done = false;
};

// POSTs and hands the response body to `receive` as it arrives; false stops reading.
bool PostReceiving(TestServer& s, const std::string& path, const std::string& body,
                   const std::function<bool(const char*, size_t)>& receive) {
  httplib::Client c = s.Http();
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.body = body;
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char* data, size_t len, uint64_t, uint64_t) { return receive(data, len); };
  httplib::Response res;
  httplib::Error err;
  return c.send(req, res, err);
}

SseResult PostStream(TestServer& s, const std::string& path, Json body, bool chat) {
  body["stream"] = true;
  SseResult r;
  std::string buf;
  EXPECT_TRUE(PostReceiving(s, path, body.dump(), [&](const char* data, size_t len) {
    buf.append(data, len);
    return true;
  }));
  for (size_t pos = 0; (pos = buf.find("data: ", pos)) != std::string::npos;) {
    const size_t end = buf.find("\n\n", pos);
    const std::string payload = buf.substr(pos + 6, end - pos - 6);
    pos = end;
    if (payload == "[DONE]") {
      r.done = true;
      continue;
    }
    const Json j = Json::parse(payload);
    if (j["choices"].empty()) continue;
    const Json& ch = j["choices"][0];
    r.text += chat ? ch["delta"].value("content", "") : ch["text"].get<std::string>();
    if (ch.contains("token_ids")) {
      for (int id : ch["token_ids"]) r.ids.push_back(id);
    }
    if (!ch["finish_reason"].is_null()) r.finish = ch["finish_reason"];
  }
  return r;
}

Json GenerateCliJson(const std::vector<int32_t>& prompt, int max_tokens) {
  const std::string ids = absl::StrJoin(prompt, ",");
  const std::string cmd = std::string(GQA_BIN_DIR) + "/gqa-generate --model " + ModelDir() +
                          " --tp 1 --prompt-ids " + ids + " --max-new-tokens " + std::to_string(max_tokens) +
                          " --temperature 0 --ignore-eos --num-kv-blocks 64 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char b[4096];
  while (size_t n = fread(b, 1, sizeof(b), p)) out.append(b, n);
  pclose(p);
  return Json::parse(out);
}

std::vector<int32_t> GenerateCli(const std::vector<int32_t>& prompt, int max_tokens) {
  return GenerateCliJson(prompt, max_tokens)["token_ids"].get<std::vector<int32_t>>();
}

TEST(ServerTest, HttpAndGrpcMatchGqaGenerate) {
  TestServer& s = Shared();
  const std::vector<int32_t> prompt = {1, 415, 2936, 9060, 285, 1142};
  const Json cli = GenerateCliJson(prompt, 12);
  const std::vector<int32_t> want = cli["token_ids"].get<std::vector<int32_t>>();
  ASSERT_EQ(want.size(), 12u);

  int status = 0;
  const Json http = PostJson(s, "/v1/completions",
                             {{"model", "test-model"}, {"prompt", prompt}, {"max_tokens", 12}, {"temperature", 0},
                              {"ignore_eos", true}},
                             &status);
  ASSERT_EQ(status, 200) << http.dump();
  EXPECT_EQ(Ids(http["choices"][0]), want);
  EXPECT_EQ(http["usage"]["completion_tokens"], 12);
  EXPECT_EQ(http["object"], "text_completion");
  EXPECT_EQ(http["choices"][0]["text"], cli["text"]);  // gqa-generate decodes with the model's tokenizer too

  v1::GenerateRequest req;
  for (int32_t t : prompt) req.mutable_token_ids()->add_ids(t);
  req.set_max_tokens(12);
  req.mutable_sampling()->set_temperature(0);
  req.set_ignore_eos(true);
  grpc::ClientContext ctx;
  v1::GenerateResponse resp;
  ASSERT_TRUE(s.Grpc().Generate(&ctx, req, &resp).ok());
  EXPECT_EQ(std::vector<int32_t>(resp.token_ids().begin(), resp.token_ids().end()), want);
  EXPECT_EQ(resp.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(resp.text(), http["choices"][0]["text"]);
}

TEST(ServerTest, StreamingConcatenatesToUnary) {
  TestServer& s = Shared();
  const Json body = {{"prompt", "The quick brown fox"}, {"max_tokens", 20}, {"temperature", 0.7}, {"seed", 9},
                     {"ignore_eos", true}};
  const Json unary = PostJson(s, "/v1/completions", body);
  const SseResult sse = PostStream(s, "/v1/completions", body, false);
  EXPECT_TRUE(sse.done);
  EXPECT_EQ(sse.finish, "length");
  EXPECT_EQ(sse.ids, Ids(unary["choices"][0]));
  EXPECT_EQ(sse.text, unary["choices"][0]["text"]);
  EXPECT_FALSE(sse.text.empty());

  const Json chat = {{"messages", {{{"role", "user"}, {"content", "Hi there"}}}}, {"max_tokens", 10}, {"temperature", 0},
                     {"ignore_eos", true}};
  const Json chat_unary = PostJson(s, "/v1/chat/completions", chat);
  ASSERT_TRUE(chat_unary.contains("choices")) << chat_unary.dump();
  const SseResult chat_sse = PostStream(s, "/v1/chat/completions", chat, true);
  EXPECT_EQ(chat_sse.text, chat_unary["choices"][0]["message"]["content"]);
  EXPECT_EQ(chat_sse.ids, Ids(chat_unary["choices"][0]));
  EXPECT_EQ(chat_unary["object"], "chat.completion");

  // gRPC stream vs unary.
  v1::GenerateRequest req;
  req.set_text("The quick brown fox");
  req.set_max_tokens(20);
  req.mutable_sampling()->set_temperature(0.7f);
  req.mutable_sampling()->set_seed(9);
  req.set_ignore_eos(true);
  grpc::ClientContext ctx;
  auto reader = s.Grpc().GenerateStream(&ctx, req);
  v1::GenerateStreamResponse m;
  std::string text;
  std::vector<int32_t> ids;
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
  while (reader->Read(&m)) {
    text += m.text();
    ids.insert(ids.end(), m.token_ids().begin(), m.token_ids().end());
    if (m.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) finish = m.finish_reason();
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(finish, v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(ids, Ids(unary["choices"][0]));
  EXPECT_EQ(text, unary["choices"][0]["text"]);
}

TEST(ServerTest, StopStringsAndTokenize) {
  TestServer& s = Shared();
  const Json full = PostJson(s, "/v1/completions", {{"prompt", "Once"}, {"max_tokens", 24}, {"temperature", 0}, {"ignore_eos", true}});
  const std::string text = full["choices"][0]["text"];
  ASSERT_GE(text.size(), 6u);
  // A stop string of two whole UTF-8 characters from the middle of the text.
  auto char_len = [&](size_t i) {
    const unsigned char c = text[i];
    return c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
  };
  size_t from = text.size() / 2;
  while (from > 0 && (static_cast<unsigned char>(text[from]) & 0xc0) == 0x80) --from;
  const size_t len = char_len(from) + (from + char_len(from) < text.size() ? char_len(from + char_len(from)) : 0);
  const std::string stop = text.substr(from, len);
  const Json cut = PostJson(s, "/v1/completions", {{"prompt", "Once"}, {"max_tokens", 24}, {"temperature", 0},
                                                   {"ignore_eos", true}, {"stop", stop}});
  EXPECT_EQ(cut["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(cut["choices"][0]["text"], text.substr(0, text.find(stop)));

  const Json tok = PostJson(s, "/tokenize", {{"prompt", "Hello world"}});
  ASSERT_TRUE(tok.contains("tokens")) << tok.dump();
  const Json detok = PostJson(s, "/detokenize", {{"tokens", tok["tokens"]}});
  EXPECT_NE(detok["prompt"].get<std::string>().find("Hello world"), std::string::npos);
  // A rendered chat prompt is encoded with its special tokens as special
  // ids: Mistral's template starts with <s> (id 1), not with "<", "s", ">".
  const Json chat_tok = PostJson(s, "/tokenize", {{"messages", {{{"role", "user"}, {"content", "Hi"}}}}});
  ASSERT_TRUE(chat_tok.contains("tokens")) << chat_tok.dump();
  EXPECT_EQ(chat_tok["tokens"][0], 1);
  EXPECT_EQ(std::count(chat_tok["tokens"].begin(), chat_tok["tokens"].end(), 1), 1);
  // User text that looks like a special token stays text in completions.
  const Json plain_tok = PostJson(s, "/tokenize", {{"prompt", "<s>"}, {"add_special_tokens", false}});
  EXPECT_NE(plain_tok["tokens"], Json({1}));
  v1::TokenizeRequest treq;
  treq.set_text("Hello world");
  v1::TokenizeResponse tresp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(s.Grpc().Tokenize(&ctx, treq, &tresp).ok());
  EXPECT_EQ(Json(std::vector<int32_t>(tresp.token_ids().begin(), tresp.token_ids().end())), tok["tokens"]);
  grpc::ClientContext ctx2;
  v1::ModelInfo info;
  ASSERT_TRUE(s.Grpc().GetModelInfo(&ctx2, v1::GetModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.num_attention_heads(), 4u);
  EXPECT_EQ(info.num_key_value_heads(), 2u);
  EXPECT_EQ(info.tensor_parallel_size(), 2u);
  EXPECT_EQ(info.kv_replication_factor(), 1.0);
  EXPECT_EQ(info.max_model_len(), 512u);
}

TEST(ServerTest, ConcurrentRequestsGetWhatTheyGetAlone) {
  TestServer& s = Shared();
  std::vector<Json> bodies;
  for (int i = 0; i < 32; ++i) {
    std::vector<int32_t> prompt;
    for (int j = 0; j <= i % 9; ++j) prompt.push_back(100 + 37 * i + j);
    bodies.push_back({{"prompt", prompt}, {"max_tokens", 4 + i % 7}, {"temperature", 0}, {"ignore_eos", true}});
  }
  std::vector<std::vector<int32_t>> alone;
  for (const Json& b : bodies) alone.push_back(Ids(PostJson(s, "/v1/completions", b)["choices"][0]));
  std::vector<std::vector<int32_t>> together(bodies.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < bodies.size(); ++i) {
    threads.emplace_back([&, i] {
      if (i % 2) {
        together[i] = PostStream(s, "/v1/completions", bodies[i], false).ids;
      } else {
        together[i] = Ids(PostJson(s, "/v1/completions", bodies[i])["choices"][0]);
      }
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < bodies.size(); ++i) EXPECT_EQ(together[i], alone[i]) << "request " << i;
  EXPECT_TRUE(s.WaitAllFree());
}

TEST(ServerTest, DeadlineCancelAndDisconnectFreeBlocks) {
  TestServer& s = Shared();
  v1::GenerateRequest req;
  req.mutable_token_ids()->add_ids(1);
  req.set_max_tokens(400);
  req.set_ignore_eos(true);
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
    v1::GenerateResponse resp;
    EXPECT_EQ(s.Grpc().Generate(&ctx, req, &resp).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  EXPECT_TRUE(s.WaitAllFree());
  {
    grpc::ClientContext ctx;
    auto reader = s.Grpc().GenerateStream(&ctx, req);
    v1::GenerateStreamResponse m;
    ASSERT_TRUE(reader->Read(&m));
    ctx.TryCancel();
    while (reader->Read(&m)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  EXPECT_TRUE(s.WaitAllFree());
  {
    // An HTTP client that goes away after the first chunk.
    int chunks = 0;
    PostReceiving(s, "/v1/completions",
                  Json{{"prompt", {1, 2}}, {"max_tokens", 400}, {"ignore_eos", true}, {"stream", true}}.dump(),
                  [&](const char*, size_t) { return ++chunks < 2; });
    EXPECT_GE(chunks, 1);
  }
  EXPECT_TRUE(s.WaitAllFree());
  EXPECT_EQ(s.free_blocks(), s.total_blocks());
}

TEST(ServerTest, BadInputsGetTheirCodes) {
  TestServer& s = Shared();
  struct Case {
    std::string body;
    int status;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {"{not json", 400, "not valid JSON"},
      {"[1,2]", 400, "must be a JSON object"},
      {R"({"prompt": 7})", 400, "'prompt'"},
      {R"({"prompt": "hi", "max_tokens": "ten"})", 400, "max_tokens"},
      {R"({"prompt": "hi", "max_tokens": -3})", 400, "max_tokens"},
      {R"({"prompt": "hi", "max_tokens": 1000000})", 400, "max_tokens"},
      {R"({"prompt": [1, 32000]})", 400, "vocabulary"},
      {R"({"prompt": [1, -5]})", 400, "prompt"},
      {R"({"prompt": "hi", "temperature": -1})", 400, "temperature"},
      {R"({"prompt": "hi", "n": 3})", 400, "n=1"},
      {R"({"prompt": "hi", "model": "gpt-9"})", 404, "gpt-9"},
      {R"({"prompt": "hi", "stop": 5})", 400, "stop"},
      {"{\"prompt\": \"\xff\xfe\"}", 400, ""},  // invalid UTF-8
      {R"({"prompt": [1, 2, 3], "max_tokens": 510})", 400, "maximum model length"},
  };
  for (const Case& c : cases) {
    auto res = s.Http().Post("/v1/completions", c.body, "application/json");
    ASSERT_TRUE(res) << c.body;
    EXPECT_EQ(res->status, c.status) << c.body << " -> " << res->body;
    const Json j = Json::parse(res->body, nullptr, false);
    ASSERT_TRUE(j.contains("error")) << res->body;
    EXPECT_TRUE(j["error"].contains("message") && j["error"].contains("type") && j["error"].contains("param") &&
                j["error"].contains("code"));
    EXPECT_NE(j["error"]["message"].get<std::string>().find(c.needle), std::string::npos) << res->body;
  }
  // Oversized body.
  auto big = s.Http().Post("/v1/completions", std::string(2 << 20, 'x'), "application/json");
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 413);
  // Unknown route.
  EXPECT_EQ(s.Http().Get("/v2/nothing")->status, 404);
  // gRPC: no prompt, bad ids, unparseable bytes.
  v1::GenerateRequest req;
  grpc::ClientContext c1;
  v1::GenerateResponse resp;
  EXPECT_EQ(s.Grpc().Generate(&c1, req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  req.mutable_token_ids()->add_ids(99999);
  grpc::ClientContext c2;
  EXPECT_EQ(s.Grpc().Generate(&c2, req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  grpc::GenericStub generic(s.channel());
  grpc::ClientContext c3;
  const std::string junk = "\xff\xff\xff\xff garbage";
  grpc::Slice slice(junk);
  grpc::ByteBuffer send(&slice, 1), recv;
  grpc::Status status;
  bool done = false;
  std::mutex mu;
  std::condition_variable cv;
  generic.UnaryCall(&c3, "/gqa.v1.Generation/Generate", grpc::StubOptions(), &send, &recv, [&](grpc::Status st) {
    std::lock_guard<std::mutex> lock(mu);
    status = st;
    done = true;
    cv.notify_all();
  });
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return done; });
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("not a valid protobuf encoding of gqa.v1.GenerateRequest"), std::string::npos)
      << status.error_message();
  lock.unlock();
  // Field 2 (text), length 2, bytes that are not UTF-8.
  const std::string bad_text("\x12\x02\xff\xfe", 4);
  for (const char* method : {"/gqa.v1.Generation/Generate", "/gqa.v1.Generation/Tokenize"}) {
    grpc::ClientContext c4;
    grpc::Slice bad_slice(method == std::string("/gqa.v1.Generation/Tokenize") ? std::string("\x0a\x02\xff\xfe", 4)
                                                                               : bad_text);
    grpc::ByteBuffer bad(&bad_slice, 1);
    done = false;
    generic.UnaryCall(&c4, method, grpc::StubOptions(), &bad, &recv, [&](grpc::Status st) {
      std::lock_guard<std::mutex> l(mu);
      status = st;
      done = true;
      cv.notify_all();
    });
    lock.lock();
    cv.wait(lock, [&] { return done; });
    lock.unlock();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << method;
    EXPECT_NE(status.error_message().find("field 'text' is not valid UTF-8"), std::string::npos)
        << method << ": " << status.error_message();
  }
  // The server still serves.
  const Json ok = PostJson(s, "/v1/completions", {{"prompt", {1, 2}}, {"max_tokens", 2}});
  EXPECT_EQ(ok["choices"][0]["token_ids"].size(), 2u);
  EXPECT_TRUE(s.WaitAllFree());
}

// A chunked upload is held to --max-body-bytes while it is read (413), as a
// Content-Length one is; a small chunked request still works.
TEST(ServerTest, ChunkedBodyLimitHoldsWhileReading) {
  TestServer& s = Shared();
  {
    RawConnection c(s.http_port());
    ASSERT_TRUE(c.Send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n"));
    // 2 MiB of chunks (the limit is 1 MiB) and no last chunk: the answer
    // can only come from a check made while reading.
    const std::string chunk = absl::StrCat("10000\r\n", std::string(0x10000, ' '), "\r\n");
    for (int i = 0; i < 32; ++i) ASSERT_TRUE(c.Send(chunk));
    const std::string raw = c.ReadAll();
    EXPECT_EQ(StatusOf(raw), 413) << raw.substr(0, 300);
    EXPECT_NE(raw.find("invalid_request_error"), std::string::npos);
  }
  RawConnection c(s.http_port());
  const std::string body = R"({"prompt": [1, 2], "max_tokens": 2})";
  ASSERT_TRUE(c.Send(absl::StrCat("POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                  "Connection: close\r\n\r\n5\r\n", body.substr(0, 5), "\r\n",
                                  absl::StrFormat("%x", body.size() - 5), "\r\n", body.substr(5), "\r\n0\r\n\r\n")));
  const std::string raw = c.ReadAll();
  EXPECT_EQ(StatusOf(raw), 200) << raw;
  EXPECT_NE(raw.find("\"token_ids\""), std::string::npos);
}

// A client that trickles its headers or body gets 408 at the deadline, not
// a thread for as long as it keeps sending.
TEST(ServerTest, SlowRequestsGet408) {
  ServerSetup setup;
  setup.tp = 1;
  setup.header_timeout = std::chrono::milliseconds(400);
  setup.body_timeout = std::chrono::milliseconds(400);
  TestServer s(setup);
  auto trickle = [&](const std::string& first, char filler) {
    RawConnection c(s.http_port());
    EXPECT_TRUE(c.Send(first));
    const auto start = std::chrono::steady_clock::now();
    // The trickle would go on for 12 s: a deadline counted from the first
    // byte (0.4 s) ends it long before, even on a loaded machine or under a
    // sanitizer; a deadline reset by every byte would not.
    while (!c.Readable(100) && std::chrono::steady_clock::now() - start < std::chrono::seconds(12)) {
      c.Send(std::string(1, filler));
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const std::string raw = c.ReadAll(std::chrono::seconds(5));
    EXPECT_EQ(StatusOf(raw), 408) << raw;
    EXPECT_LT(seconds, 6.0);
  };
  trickle("POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ", 'a');
  trickle("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{", ' ');
}

// Framing that proxies may read differently is refused; pipelined requests
// are answered in order without a stall.
TEST(ServerTest, HttpFramingAndPipelining) {
  TestServer& s = Shared();
  const std::string body = R"({"prompt": [1, 2], "max_tokens": 2})";
  struct Case {
    std::string request;
    int status;
  };
  const std::vector<Case> cases = {
      {absl::StrCat("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: ", body.size(),
                    "\r\nContent-Length: 3\r\n\r\n", body), 400},
      {absl::StrCat("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: ", body.size(), ", 3\r\n\r\n", body), 400},
      {absl::StrCat("POST /v1/completions HTTP/1.1\r\nHost: x\r\nno colon here\r\nContent-Length: ", body.size(),
                    "\r\n\r\n", body), 400},
      {absl::StrCat("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: ", body.size(),
                    "\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400},
      {"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501},
      {"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: 0\r\n\r\n", 415},
      {"GET /health HTTP/2.0\r\nHost: x\r\n\r\n", 505},
      {"TRACE /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n", 405},
      {"GET /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405},
      {"TRACE /nothing HTTP/1.1\r\nHost: x\r\n\r\n", 404},
      {absl::StrCat("GET /", std::string(64 << 10, 'a'), " HTTP/1.1\r\nHost: x\r\n\r\n"), 414},
  };
  for (const Case& c : cases) {
    RawConnection conn(s.http_port());
    ASSERT_TRUE(conn.Send(c.request));
    const std::string raw = conn.ReadAll();
    EXPECT_EQ(StatusOf(raw), c.status) << c.request.substr(0, 120) << "\n-> " << raw.substr(0, 300);
    const size_t at = raw.find("\r\n\r\n");
    ASSERT_NE(at, std::string::npos) << raw;
    const Json j = Json::parse(raw.substr(at + 4), nullptr, false);
    ASSERT_TRUE(j.contains("error")) << raw;
    if (c.status != 404 && c.status < 500) {
      EXPECT_EQ(j["error"]["type"], "invalid_request_error") << raw;
    }
    if (c.status == 405) {
      EXPECT_NE(raw.find("\r\nAllow: POST\r\n"), std::string::npos) << raw;
    }
  }
  // Two requests in one packet: two answers, in order, at once.
  RawConnection conn(s.http_port());
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(conn.Send(absl::StrCat("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: ", body.size(),
                                     "\r\n\r\n", body, "GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")));
  const std::string raw = conn.ReadAll();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  EXPECT_EQ(Count(raw, "HTTP/1.1 200 OK"), 2u) << raw;
  const size_t first = raw.find("\"token_ids\""), second = raw.find("\"object\":\"list\"");
  EXPECT_TRUE(first != std::string::npos && second != std::string::npos && first < second) << raw;
}

// Bodies that are not JSON say what is wrong and where; chat's top_logprobs
// is range-checked; models.retrieve() works.
TEST(ServerTest, JsonErrorsTopLogprobsAndModelRetrieve) {
  TestServer& s = Shared();
  const std::vector<std::pair<std::string, std::string>> bodies = {
      {R"({"prompt": "hi", "max_tokens": })", "byte offset 32"},
      {R"({"prompt": "hi", "temperature": NaN})", "byte offset 33"},
      {"{\"prompt\": \"a\xff\"}", "UTF-8"},
      {"[1, 2]", "must be a JSON object (it is a JSON array)"},
  };
  for (const auto& [body, needle] : bodies) {
    int status = 0;
    auto res = s.Http().Post("/v1/completions", body, "application/json");
    ASSERT_TRUE(res);
    status = res->status;
    EXPECT_EQ(status, 400);
    const Json j = Json::parse(res->body);
    EXPECT_NE(j["error"]["message"].get<std::string>().find(needle), std::string::npos) << res->body;
  }
  int status = 0;
  const Json chat = PostJson(s, "/v1/chat/completions",
                             {{"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"logprobs", true},
                              {"top_logprobs", -5}, {"max_tokens", 1}},
                             &status);
  EXPECT_EQ(status, 400) << chat.dump();
  EXPECT_EQ(chat["error"]["param"], "top_logprobs");

  auto model = s.Http().Get("/v1/models/test-model");
  ASSERT_TRUE(model);
  EXPECT_EQ(model->status, 200);
  EXPECT_EQ(Json::parse(model->body)["id"], "test-model");
  EXPECT_EQ(Json::parse(model->body)["object"], "model");
  auto other = s.Http().Get("/v1/models/gpt-9");
  EXPECT_EQ(other->status, 404);
  EXPECT_EQ(Json::parse(other->body)["error"]["code"], "model_not_found");
}

// JSON bodies nest at most 64 levels (the parser and each walk recurse per
// level; 100,000 levels overflowed the stack and ended the server).
TEST(ServerTest, DeepJsonBodiesGet400) {
  TestServer& s = Shared();
  auto nested = [](int depth) { return std::string(depth, '[') + std::string(depth, ']'); };
  auto post = [&](const std::string& path, const std::string& body) {
    auto res = s.Http().Post(path, body, "application/json");
    return res ? std::make_pair(res->status, res->body) : std::make_pair(0, std::string("(no response)"));
  };
  // At the limit: the body object and 63 arrays. Just past it: 400.
  auto [ok_status, ok_body] = post("/tokenize", R"({"prompt": "hi", "x": )" + nested(63) + "}");
  EXPECT_EQ(ok_status, 200) << ok_body;
  auto [deep_status, deep_body] = post("/tokenize", R"({"prompt": "hi", "x": )" + nested(64) + "}");
  EXPECT_EQ(deep_status, 400) << deep_body;
  EXPECT_NE(deep_body.find("deeper than 64"), std::string::npos) << deep_body;
  // Brackets inside strings do not count.
  auto [str_status, str_body] = post("/tokenize", R"({"prompt": ")" + std::string(100000, '[') + R"("})");
  EXPECT_EQ(str_status, 200) << str_body.substr(0, 200);
  // Chat-template values at the limit reach the template and render.
  const std::string user = R"({"role": "user", "content": "Hi"})";
  auto [kw_status, kw_body] =
      post("/v1/chat/completions", R"({"max_tokens": 1, "messages": [)" + user +
                                       R"(], "chat_template_kwargs": {"x": )" + nested(62) + "}}");
  EXPECT_EQ(kw_status, 200) << kw_body;
  // The cases of the issue, 100,000 levels deep.
  const std::string deep = nested(100000);
  const std::vector<std::string> bodies = {
      R"({"messages": [{"role": "user", "content": )" + deep + "}]}",
      R"({"messages": [{"role": "user", "content": "Hi", "extra": )" + deep + "}]}",
      R"({"messages": [)" + user + R"(], "tools": )" + deep + "}",
      R"({"messages": [)" + user + R"(], "chat_template_kwargs": {"x": )" + deep + "}}",
      deep,
  };
  for (const std::string path : {"/v1/chat/completions", "/tokenize"}) {
    for (const std::string& body : bodies) {
      auto [status, text] = post(path, body);
      EXPECT_EQ(status, 400) << path << " " << body.substr(0, 80) << ": " << text;
      EXPECT_NE(text.find("deeper than 64"), std::string::npos) << text;
    }
  }
  auto [c_status, c_text] = post("/v1/completions", R"({"prompt": )" + deep + "}");
  EXPECT_EQ(c_status, 400) << c_text;
  // The server still serves.
  const Json ok = PostJson(s, "/v1/completions", {{"prompt", {1, 2}}, {"max_tokens", 2}});
  EXPECT_EQ(ok["choices"][0]["token_ids"].size(), 2u);
}

// gRPC requests nest at most 64 messages or groups (protobuf's parser
// recurses per level).
TEST(ServerTest, DeepGrpcMessagesAreRefused) {
  TestServer& s = Shared();
  grpc::GenericStub generic(s.channel());
  auto call = [&](const std::string& bytes) {
    grpc::ClientContext ctx;
    grpc::Slice slice(bytes);
    grpc::ByteBuffer send(&slice, 1), recv;
    std::promise<grpc::Status> done;
    generic.UnaryCall(&ctx, "/gqa.v1.Generation/Tokenize", grpc::StubOptions(), &send, &recv,
                      [&](grpc::Status st) { done.set_value(st); });
    return done.get_future().get();
  };
  // Unknown field 99 as groups nested `n` deep, then the text field.
  auto groups = [](int n) {
    std::string b;
    for (int i = 0; i < n; ++i) b += "\x9b\x06";
    for (int i = 0; i < n; ++i) b += "\x9c\x06";
    return b + std::string("\x0a\x02hi", 4);
  };
  EXPECT_TRUE(call(groups(64)).ok()) << call(groups(64)).error_message();
  const grpc::Status past = call(groups(65));
  EXPECT_EQ(past.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(past.error_message().find("deeper than 64"), std::string::npos) << past.error_message();
  EXPECT_EQ(call(groups(100000)).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(call(groups(1)).ok());
}

// Response ids are unique per server; a stream's chunks share one.
TEST(ServerTest, CompletionIdsAreUnique) {
  TestServer& s = Shared();
  httplib::Client c = s.Http();
  c.set_keep_alive(true);
  std::set<std::string> ids;
  for (int i = 0; i < 20; ++i) {
    auto res = c.Post("/v1/completions", R"({"prompt": [1, 2], "max_tokens": 1})", "application/json");
    ASSERT_TRUE(res);
    ids.insert(Json::parse(res->body)["id"].get<std::string>());
  }
  EXPECT_EQ(ids.size(), 20u);
  std::string buf;
  ASSERT_TRUE(PostReceiving(s, "/v1/chat/completions",
                            Json{{"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"max_tokens", 4},
                                 {"ignore_eos", true}, {"stream", true}}.dump(),
                            [&](const char* data, size_t len) {
                              buf.append(data, len);
                              return true;
                            }));
  std::set<std::string> stream_ids;
  for (size_t pos = 0; (pos = buf.find("data: {", pos)) != std::string::npos; ++pos) {
    stream_ids.insert(Json::parse(buf.substr(pos + 6, buf.find("\n\n", pos) - pos - 6))["id"].get<std::string>());
  }
  ASSERT_EQ(stream_ids.size(), 1u) << buf;
  EXPECT_EQ(ids.count(*stream_ids.begin()), 0u);
  EXPECT_EQ(stream_ids.begin()->rfind("chatcmpl-", 0), 0u);
}

// A request larger than the whole KV cache can never run: 400, not "retry
// later"; with --max-queued-requests 0 an idle server still admits.
TEST(ServerTest, NeverFittingIs400AndNoWaitingRoomAdmitsWhenFree) {
  ServerSetup setup;
  setup.tp = 1;
  setup.blocks = 4;  // 32 tokens in all
  setup.max_seqs = 1;
  setup.max_queued = 0;
  TestServer s(setup);
  int status = 0;
  const Json big = PostJson(s, "/v1/completions", {{"prompt", {1, 2, 3}}, {"max_tokens", 100}}, &status);
  EXPECT_EQ(status, 400) << big.dump();
  EXPECT_EQ(big["error"]["type"], "invalid_request_error");
  EXPECT_NE(big["error"]["message"].get<std::string>().find("can never run"), std::string::npos) << big.dump();
  v1::GenerateRequest req;
  for (int t : {1, 2, 3}) req.mutable_token_ids()->add_ids(t);
  req.set_max_tokens(100);
  grpc::ClientContext ctx;
  v1::GenerateResponse resp;
  EXPECT_EQ(s.Grpc().Generate(&ctx, req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  const Json ok = PostJson(s, "/v1/completions", {{"prompt", {1, 2}}, {"max_tokens", 3}}, &status);
  EXPECT_EQ(status, 200) << ok.dump();
  // While the only slot is taken, there is no waiting room.
  std::thread running([&] {
    PostJson(s, "/v1/completions", {{"prompt", {1}}, {"max_tokens", 30}, {"ignore_eos", true}});
  });
  while (s.frontend().engine().Stats().running == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const Json refused = PostJson(s, "/v1/completions", {{"prompt", {2}}, {"max_tokens", 2}}, &status);
  EXPECT_EQ(status, 429) << refused.dump();
  running.join();
  EXPECT_EQ(PostJson(s, "/v1/completions", {{"prompt", {1, 2}}, {"max_tokens", 3}}, &status)["choices"].size(), 1u);
  EXPECT_EQ(status, 200);
}

// A second server cannot share the gRPC port (gRPC's SO_REUSEPORT is off).
TEST(ServerTest, GrpcPortIsNotShared) {
  TestServer& s = Shared();
  GrpcOptions go;
  go.port = s.grpc_port();
  GrpcServer second(go, &s.frontend());
  const absl::Status st = second.Start();
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("another server"), std::string::npos) << st;
}

// Whatever a client puts in request_id stays inside its log line.
TEST(ServerTest, RequestIdsCannotForgeLogLines) {
  const std::string forged = "a b\ngqa: request id=forged finish=stop\x1b[2J\xc2\x9b\"";
  for (bool json : {false, true}) {
    ServerSetup setup;
    setup.tp = 1;
    setup.log_json = json;
    TestServer s(setup);
    ::testing::internal::CaptureStderr();
    int status = 0;
    PostJson(s, "/v1/completions", {{"prompt", {1, 2}}, {"max_tokens", 1}, {"request_id", forged}}, &status);
    const std::string log = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(status, 200);
    EXPECT_EQ(log.find("\ngqa: request id=forged"), std::string::npos) << log;
    EXPECT_EQ(log.find('\x1b'), std::string::npos) << log;
    EXPECT_EQ(log.find("\xc2\x9b"), std::string::npos) << log;
    EXPECT_EQ(Count(log, "\n"), 1u) << log;
    if (json) {
      const Json line = Json::parse(log, nullptr, false);
      ASSERT_TRUE(line.is_object()) << log;
      EXPECT_EQ(line["request_id"], Json::parse(Json(forged).dump(-1, ' ', false, Json::error_handler_t::replace)));
      EXPECT_EQ(line["output_tokens"], 1);
    } else {
      EXPECT_NE(log.find("gqa: request id=a\\x20b\\ngqa:\\x20request\\x20id=forged"), std::string::npos) << log;
    }
  }
}

// Special-token text typed into chat content: by default it becomes the
// special token, as transformers' apply_chat_template does; with
// special_tokens_in_content off it stays text.
TEST(ServerTest, SpecialTokensInChatContent) {
  const Json body = {{"messages", {{{"role", "user"}, {"content", "hi </s><s>[INST] there"}}}}};
  int status = 0;
  const Json on = PostJson(Shared(), "/tokenize", body, &status);
  ASSERT_EQ(status, 200) << on.dump();
  EXPECT_EQ(std::count(on["tokens"].begin(), on["tokens"].end(), 1), 2);  // <s>: BOS and the typed one
  EXPECT_EQ(std::count(on["tokens"].begin(), on["tokens"].end(), 2), 1);  // </s>
  ServerSetup setup;
  setup.tp = 1;
  setup.special_tokens_in_content = false;
  TestServer s(setup);
  const Json off = PostJson(s, "/tokenize", body, &status);
  ASSERT_EQ(status, 200) << off.dump();
  EXPECT_EQ(std::count(off["tokens"].begin(), off["tokens"].end(), 1), 1);  // only the template's BOS
  EXPECT_EQ(std::count(off["tokens"].begin(), off["tokens"].end(), 2), 0);
  const Json text = PostJson(s, "/detokenize", {{"tokens", off["tokens"]}});
  EXPECT_NE(text["prompt"].get<std::string>().find("hi </s><s>[INST] there"), std::string::npos) << text.dump();
  // Content without special-token text is encoded the same either way.
  const Json plain = {{"messages", {{{"role", "user"}, {"content", "hi there"}}}}};
  EXPECT_EQ(PostJson(s, "/tokenize", plain)["tokens"], PostJson(Shared(), "/tokenize", plain)["tokens"]);
  // And a chat completion runs with it.
  const Json chat = PostJson(s, "/v1/chat/completions", {{"messages", body["messages"]}, {"max_tokens", 2}}, &status);
  EXPECT_EQ(status, 200) << chat.dump();
  EXPECT_EQ(chat["usage"]["prompt_tokens"], off["count"]);
}

// The demo's chat template takes a system message, as OpenAI examples send.
TEST(ServerTest, DemoChatTemplateAcceptsASystemMessage) {
  std::ifstream tok_in(fs::path(ModelDir()) / "tokenizer.json");
  const std::string tok_json((std::istreambuf_iterator<char>(tok_in)), {});
  std::ifstream tpl(testing::FixturePath("tokenizer/templates/mistral_system.jinja"));
  ASSERT_TRUE(tpl.good());
  const Json cfg = {{"bos_token", "<s>"}, {"eos_token", "</s>"},
                    {"chat_template", std::string(std::istreambuf_iterator<char>(tpl), {})}};
  auto t = Tokenizer::FromJson(tok_json, cfg.dump());
  ASSERT_TRUE(t.ok()) << t.status();
  nlohmann::ordered_json vars;
  vars["messages"] = nlohmann::ordered_json::parse(R"([{"role": "system", "content": "Be brief."},
      {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}])");
  vars["add_generation_prompt"] = true;
  auto text = (*t)->ApplyChatTemplate(vars);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "<s>[INST] Be brief.\n\nHi [/INST]Hello</s>[INST] Bye [/INST]");  // as jinja2 renders it
  vars["messages"] = nlohmann::ordered_json::parse(R"([{"role": "user", "content": "Hi"}])");
  EXPECT_EQ(*(*t)->ApplyChatTemplate(vars), "<s>[INST] Hi [/INST]");  // Mistral's own without a system message
}

// gqa-client: numbers that do not parse are usage errors; text prints as UTF-8.
TEST(ServerTest, ClientChecksNumbersAndPrintsUtf8) {
  ServerSetup setup;
  setup.tp = 1;
  setup.model_name = "modèle-ü";
  TestServer s(setup);
  auto run = [&](const std::string& args, int* status) {
    const std::string cmd = std::string(GQA_BIN_DIR) + "/gqa-client --server 127.0.0.1:" +
                            std::to_string(s.grpc_port()) + " " + args + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    std::string out;
    char b[4096];
    while (size_t n = fread(b, 1, sizeof(b), p)) out.append(b, n);
    *status = pclose(p);
    return out;
  };
  int status = 0;
  std::string out = run("--prompt-ids 1,2 --max-tokens ten", &status);
  EXPECT_EQ(WEXITSTATUS(status), 2) << out;
  EXPECT_NE(out.find("--max-tokens must be an integer"), std::string::npos) << out;
  out = run("--prompt-ids 1,2 --temperature hot", &status);
  EXPECT_EQ(WEXITSTATUS(status), 2) << out;
  EXPECT_NE(out.find("--temperature"), std::string::npos) << out;
  out = run("--info", &status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << out;
  EXPECT_NE(out.find("modèle-ü"), std::string::npos) << out;
}

TEST(ServerTest, ApiKey) {
  ServerSetup setup;
  setup.api_key = "sekret";
  TestServer s(setup);
  auto no_key = s.Http().Post("/v1/completions", R"({"prompt": [1]})", "application/json");
  EXPECT_EQ(no_key->status, 401);
  EXPECT_NE(no_key->body.find("authentication_error"), std::string::npos);
  httplib::Headers h = {{"Authorization", "Bearer sekret"}};
  EXPECT_EQ(s.Http().Post("/v1/completions", h, R"({"prompt": [1], "max_tokens": 1})", "application/json")->status, 200);
  grpc::ClientContext c1;
  v1::ModelInfo info;
  EXPECT_EQ(s.Grpc().GetModelInfo(&c1, v1::GetModelInfoRequest(), &info).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  grpc::ClientContext c2;
  c2.AddMetadata("authorization", "Bearer sekret");
  EXPECT_TRUE(s.Grpc().GetModelInfo(&c2, v1::GetModelInfoRequest(), &info).ok());
  // The scheme is case-insensitive (RFC 7235); the key is not.
  for (const char* scheme : {"bearer", "BEARER"}) {
    httplib::Headers hs = {{"Authorization", std::string(scheme) + " sekret"}};
    EXPECT_EQ(s.Http().Post("/v1/completions", hs, R"({"prompt": [1], "max_tokens": 1})", "application/json")->status, 200);
    grpc::ClientContext c;
    c.AddMetadata("authorization", std::string(scheme) + " sekret");
    EXPECT_TRUE(s.Grpc().GetModelInfo(&c, v1::GetModelInfoRequest(), &info).ok()) << scheme;
  }
  httplib::Headers wrong = {{"Authorization", "Bearer SEKRET"}};
  EXPECT_EQ(s.Http().Post("/v1/completions", wrong, R"({"prompt": [1]})", "application/json")->status, 401);
  // Health checking stays open for probes that carry no key (README).
  grpc::GenericStub generic(s.channel());
  grpc::ClientContext c3;
  grpc::Slice nothing(std::string(""));
  grpc::ByteBuffer empty(&nothing, 1), recv;  // an empty HealthCheckRequest
  std::promise<grpc::Status> health;
  generic.UnaryCall(&c3, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &empty, &recv,
                    [&](grpc::Status st) { health.set_value(st); });
  EXPECT_TRUE(health.get_future().get().ok());
  // So does /metrics for scrapers, unless the operator asks otherwise.
  EXPECT_EQ(s.Http().Get("/metrics")->status, 200);
}

TEST(ServerTest, MetricsCanRequireTheKey) {
  ServerSetup setup;
  setup.tp = 1;
  setup.api_key = "sekret";
  setup.metrics_require_key = true;
  TestServer s(setup);
  EXPECT_EQ(s.Http().Get("/metrics")->status, 401);
  httplib::Headers h = {{"Authorization", "Bearer sekret"}};
  EXPECT_EQ(s.Http().Get("/metrics", h)->status, 200);
}

TEST(ServerTest, OverloadGets429WithoutTouchingRunningRequests) {
  ServerSetup setup;
  setup.tp = 1;
  setup.max_seqs = 1;
  setup.max_queued = 1;
  TestServer s(setup);
  // One long request runs; one waits; the next is refused.
  std::vector<int32_t> running_ids;
  std::thread running([&] {
    running_ids = Ids(PostJson(s, "/v1/completions", {{"prompt", {1}}, {"max_tokens", 300}, {"temperature", 0}, {"ignore_eos", true}})["choices"][0]);
  });
  while (s.frontend().engine().Stats().running == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  std::thread waiting([&] { PostJson(s, "/v1/completions", {{"prompt", {2}}, {"max_tokens", 2}}); });
  while (s.frontend().engine().Stats().waiting == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  int status = 0;
  const Json refused = PostJson(s, "/v1/completions", {{"prompt", {3}}, {"max_tokens", 2}}, &status);
  EXPECT_EQ(status, 429) << refused.dump();
  EXPECT_EQ(refused["error"]["type"], "rate_limit_error");
  v1::GenerateRequest req;
  req.mutable_token_ids()->add_ids(3);
  grpc::ClientContext ctx;
  v1::GenerateResponse resp;
  EXPECT_EQ(s.Grpc().Generate(&ctx, req, &resp).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  running.join();
  waiting.join();
  EXPECT_EQ(running_ids.size(), 300u);
  EXPECT_EQ(running_ids, GenerateCli({1}, 300));
}

// Every route the server answers is in docs/openapi.json with its methods,
// and nothing else is; the program serves the file it was built from.
TEST(ServerTest, EveryRouteIsInTheOpenApiDescription) {
  TestServer& s = Shared();
  const Json spec = Json::parse(OpenApiJson());
  EXPECT_EQ(spec.value("openapi", "").substr(0, 2), "3.");
  std::set<std::pair<std::string, std::string>> from_table, from_spec, registered;
  for (const HttpRoute& r : HttpRoutes()) {
    const std::string method = absl::AsciiStrToLower(r.method);
    from_table.insert({method, r.path});
    if (method == "get") from_table.insert({"head", r.path});  // the library answers HEAD for GET
  }
  for (const HttpRoute& r : s.http().registered_routes()) {
    registered.insert({r.method, r.path});
    EXPECT_TRUE(from_table.count({absl::AsciiStrToLower(r.method), r.path})) << r.method << " " << r.path;
  }
  EXPECT_EQ(registered.size(), HttpRoutes().size());
  for (const auto& [path, ops] : spec["paths"].items()) {
    for (const auto& [method, op] : ops.items()) {
      if (method == "parameters" || method == "summary" || method == "description") continue;
      from_spec.insert({method, path});
      EXPECT_TRUE(op.contains("responses")) << method << " " << path;
    }
  }
  EXPECT_EQ(from_table, from_spec);
  // Every described operation reaches a handler: no "no route" 404, no 405.
  for (const auto& [method, path] : from_spec) {
    std::string target = path;
    if (const size_t open = target.find('{'); open != std::string::npos) {
      target.replace(open, target.find('}') - open + 1, "test-model");
    }
    httplib::Client c = s.Http();
    httplib::Result res = method == "get" ? c.Get(target) : method == "head" ? c.Head(target)
                                                           : c.Post(target, "{}", "application/json");
    ASSERT_TRUE(res) << method << " " << target;
    EXPECT_NE(res->status, 405) << method << " " << target;
    EXPECT_EQ(res->body.find("no route"), std::string::npos) << method << " " << target << ": " << res->body;
  }
  auto served = s.Http().Get("/openapi.json");
  ASSERT_TRUE(served);
  EXPECT_EQ(served->status, 200);
  EXPECT_EQ(served->get_header_value("Content-Type"), "application/json");
  std::ifstream in(fs::path(GQA_FIXTURES_DIR).parent_path().parent_path() / "docs" / "openapi.json");
  const std::string source((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(served->body, source) << "rebuild: the served description is not docs/openapi.json";
}

// A client that closes its connection while its non-streaming request runs
// gets its requests aborted: KV blocks and slots come back within a second,
// long before the requests could have finished.
TEST(ServerTest, ClosedConnectionAbortsUnaryRequests) {
  ServerSetup setup;
  setup.blocks = 512;
  TestServer s(setup);
  auto generated = [&] {
    const std::string body = s.Http().Get("/metrics")->body;
    const size_t at = body.find("\ngqa_generation_tokens_total ");
    return at == std::string::npos ? -1.0 : std::stod(body.substr(at + 29));
  };
  const double before = generated();
  constexpr int kRequests = 5, kMaxTokens = 500;
  std::vector<std::unique_ptr<RawConnection>> conns;
  const std::string body = Json{{"prompt", {1, 2}}, {"max_tokens", kMaxTokens}, {"ignore_eos", true}}.dump();
  for (int i = 0; i < kRequests; ++i) {
    conns.push_back(std::make_unique<RawConnection>(s.http_port()));
    ASSERT_TRUE(conns.back()->Send(absl::StrCat("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                                "application/json\r\nContent-Length: ",
                                                body.size(), "\r\n\r\n", body)));
  }
  for (int i = 0; i < 2000 && s.frontend().inflight() < kRequests; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(s.frontend().inflight(), kRequests);
  ASSERT_LT(s.free_blocks(), s.total_blocks());
  const auto closed_at = std::chrono::steady_clock::now();
  conns.clear();  // the clients go away without reading
  bool freed = false;
  while (std::chrono::steady_clock::now() - closed_at < std::chrono::seconds(1)) {
    if (s.frontend().inflight() == 0 && s.free_blocks() == s.total_blocks() &&
        s.frontend().engine().Stats().running == 0) {
      freed = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - closed_at).count();
  EXPECT_TRUE(freed) << "still " << s.frontend().inflight() << " requests and "
                     << s.total_blocks() - s.free_blocks() << " blocks in use 1 s after the clients closed";
  // Aborted, not run to the end: far fewer tokens than asked for.
  EXPECT_LT(generated() - before, kRequests * kMaxTokens / 2) << "freed after " << ms << " ms";
  // A client that stays connected still gets its answer.
  auto res = s.Http().Post("/v1/completions", Json{{"prompt", {1, 2}}, {"max_tokens", 4}}.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

// One client address may hold at most --max-connections-per-ip connections:
// one more is answered 429 and closed; when one closes, it may connect again.
// Loopback clients are counted only when asked to.
TEST(ServerTest, ConnectionsPerClientAddressAreLimited) {
  ServerSetup setup;
  setup.max_connections_per_ip = 3;
  setup.limit_loopback_connections = true;
  TestServer s(setup);
  std::vector<std::unique_ptr<RawConnection>> held;
  for (int i = 0; i < 3; ++i) held.push_back(std::make_unique<RawConnection>(s.http_port()));
  for (int i = 0; i < 100 && s.http().connection_stats().open < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(s.http().connection_stats().open, 3);
  {
    RawConnection extra(s.http_port());
    extra.Send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    const std::string got = extra.ReadAll(std::chrono::seconds(5));
    EXPECT_EQ(StatusOf(got), 429) << got;
    EXPECT_NE(got.find("too many connections from 127.0.0.1"), std::string::npos) << got;
  }
  // The held connections still work.
  ASSERT_TRUE(held[0]->Send("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  EXPECT_EQ(StatusOf(held[0]->ReadAll(std::chrono::seconds(5))), 200);
  held.erase(held.begin());
  for (int i = 0; i < 200 && s.http().connection_stats().open > 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  RawConnection again(s.http_port());
  ASSERT_TRUE(again.Send("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  EXPECT_EQ(StatusOf(again.ReadAll(std::chrono::seconds(5))), 200);

  // By default loopback clients are not counted (local proxies, benchmarks).
  ServerSetup open_setup;
  open_setup.max_connections_per_ip = 3;
  TestServer open_server(open_setup);
  std::vector<std::unique_ptr<RawConnection>> many;
  for (int i = 0; i < 6; ++i) many.push_back(std::make_unique<RawConnection>(open_server.http_port()));
  for (auto& c : many) ASSERT_TRUE(c->Send("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  for (auto& c : many) EXPECT_EQ(StatusOf(c->ReadAll(std::chrono::seconds(5))), 200);
}

// Idle keep-alive connections hold no thread: hundreds stay open between
// requests with a handful of workers, and each still answers its next one.
// A connection that sends nothing is closed after the idle timeout (5 s).
TEST(ServerTest, IdleConnectionsHoldNoThread) {
  TestServer s(ServerSetup{});
  constexpr int kConns = 300;
  std::vector<std::unique_ptr<RawConnection>> conns;
  const std::string get = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
  auto read_response = [](RawConnection& c) {
    std::string got;
    char buf[4096];
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (got.find("\r\n\r\n") == std::string::npos && std::chrono::steady_clock::now() < end) {
      if (!c.Readable(50)) continue;
      const ssize_t n = recv(c.fd(), buf, sizeof(buf), 0);
      if (n <= 0) break;
      got.append(buf, static_cast<size_t>(n));
    }
    return got;
  };
  for (int i = 0; i < kConns; ++i) {
    conns.push_back(std::make_unique<RawConnection>(s.http_port()));
    ASSERT_TRUE(conns.back()->Send(get));
    ASSERT_EQ(StatusOf(read_response(*conns.back())), 200) << i;
  }
  // A worker lets go of its connection just after writing the answer.
  for (int i = 0; i < 200 && s.http().connection_stats().busy > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const HttpServer::ConnectionStats st = s.http().connection_stats();
  EXPECT_EQ(st.open, kConns);
  EXPECT_EQ(st.busy, 0);
  EXPECT_LE(st.workers, 8) << "idle connections should not hold worker threads";
  for (auto& c : conns) {
    ASSERT_TRUE(c->Send(get));
    EXPECT_EQ(StatusOf(read_response(*c)), 200);
  }
  EXPECT_LE(s.http().connection_stats().workers, 8);
  // Silent connections are closed after the idle timeout.
  RawConnection silent(s.http_port());
  EXPECT_TRUE(silent.ReadAll(std::chrono::seconds(8)).empty());
  EXPECT_TRUE(silent.Readable(0)) << "closed by the server";
}

// A model id the route's pattern once could not hold (a decoded newline)
// was answered "405: GET is not allowed here; allowed: GET, HEAD"; it is an
// unknown model (found by schemathesis).
TEST(ServerTest, AnyModelIdIsLookedUp) {
  TestServer& s = Shared();
  for (const std::string id : {"a%0Ab", "test-model%0A", "%0D%0A", "x%00y"}) {
    auto got = s.Http().Get("/v1/models/" + id);
    ASSERT_TRUE(got) << id;
    EXPECT_EQ(got->status, 404) << id << ": " << got->body;
    EXPECT_NE(got->body.find("model_not_found"), std::string::npos) << id << ": " << got->body;
    auto head = s.Http().Head("/v1/models/" + id);
    ASSERT_TRUE(head) << id;
    EXPECT_EQ(head->status, 404) << id;
  }
  // A wrong method on a real route is still 405.
  RawConnection raw(s.http_port());
  ASSERT_TRUE(raw.Send("POST /v1/models/test-model HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"));
  EXPECT_EQ(StatusOf(raw.ReadAll(std::chrono::seconds(5))), 405);
}

TEST(ServerTest, MetricsMove) {
  TestServer& s = Shared();
  auto get = [&](const std::string& name) {
    const std::string body = s.Http().Get("/metrics")->body;
    const size_t at = body.find("\n" + name + " ");
    EXPECT_NE(at, std::string::npos) << name;
    return std::stod(body.substr(at + name.size() + 2));
  };
  for (const char* m : {"gqa_num_requests_running", "gqa_num_requests_waiting", "gqa_kv_cache_usage_ratio",
                        "gqa_kv_replication_factor", "gqa_num_preemptions_total", "gqa_time_to_first_token_seconds_count",
                        "gqa_time_per_output_token_seconds_count", "gqa_e2e_request_latency_seconds_count",
                        "gqa_request_queue_time_seconds_count"}) {
    get(m);
  }
  // Prometheus' conventions: a _total metric is a counter.
  const std::string text = s.Http().Get("/metrics")->body;
  EXPECT_NE(text.find("# TYPE gqa_num_preemptions_total counter\n"), std::string::npos);
  for (size_t at = text.find("# TYPE "); at != std::string::npos; at = text.find("# TYPE ", at + 1)) {
    const std::string line = text.substr(at + 7, text.find('\n', at) - at - 7);
    const std::string name = line.substr(0, line.find(' ')), type = line.substr(line.find(' ') + 1);
    if (absl::EndsWith(name, "_total")) {
      EXPECT_EQ(type, "counter") << name;
    }
    if (type == "counter") {
      EXPECT_TRUE(absl::EndsWith(name, "_total")) << name;
    }
  }
  const double gen0 = get("gqa_generation_tokens_total"), prompt0 = get("gqa_prompt_tokens_total");
  const double e2e0 = get("gqa_e2e_request_latency_seconds_count");
  PostJson(s, "/v1/completions", {{"prompt", {5, 6, 7}}, {"max_tokens", 5}, {"ignore_eos", true}});
  EXPECT_EQ(get("gqa_generation_tokens_total"), gen0 + 5);
  EXPECT_EQ(get("gqa_prompt_tokens_total"), prompt0 + 3);
  EXPECT_EQ(get("gqa_e2e_request_latency_seconds_count"), e2e0 + 1);
  EXPECT_EQ(get("gqa_kv_cache_usage_ratio"), 0.0);
  // While a long request runs, usage is above zero and one request runs.
  std::thread t([&] { PostJson(s, "/v1/completions", {{"prompt", {5}}, {"max_tokens", 400}, {"ignore_eos", true}}); });
  double usage = 0;
  for (int i = 0; i < 500 && usage == 0; ++i) {
    usage = get("gqa_kv_cache_usage_ratio");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_GT(usage, 0.0);
  t.join();
  EXPECT_TRUE(s.WaitAllFree());
}

}  // namespace
}  // namespace gqa

namespace gqa {
namespace {

// Starts the gqa-server program with `args` on free ports (ServerProcess);
// returns its HTTP port (0 if it did not come up, after killing it) and its
// pid, which the caller signals and reaps.
int StartServerProcess(const std::string& tag, const std::vector<std::string>& args, pid_t* pid_out,
                       const std::vector<std::pair<std::string, std::string>>& env = {},
                       std::string* log_path = nullptr) {
  const std::string log = testing::ProcessTempDir(tag);
  std::filesystem::create_directories(log);
  const std::string log_file = log + "/server.log";
  if (log_path) *log_path = log_file;
  std::vector<std::string> all = {"--model", ModelDir()};
  all.insert(all.end(), args.begin(), args.end());
  ServerProcess server;
  const absl::Status st = server.Start(std::string(GQA_BIN_DIR) + "/gqa-server", all, log_file, 60, env);
  if (!st.ok()) {
    std::fprintf(stderr, "%s\n", std::string(st.message()).c_str());
    return 0;
  }
  *pid_out = server.Release();
  return server.http_port();
}

// The API key from a file or $GQA_API_KEY (not only the command line, where
// ps shows it); loading prints progress.
TEST(ServerProcessTest, ApiKeyFromFileOrEnvironmentAndLoadProgress) {
  const std::string dir = testing::ProcessTempDir("gqa_server_key");
  fs::create_directories(dir);
  std::ofstream(dir + "/key") << "from-file\n";
  struct Way {
    std::vector<std::string> args;
    std::vector<std::pair<std::string, std::string>> env;
    std::string key;
  };
  for (const Way& way : {Way{{"--api-key-file", dir + "/key"}, {}, "from-file"},
                         Way{{}, {{"GQA_API_KEY", "from-env"}}, "from-env"}}) {
    pid_t pid = 0;
    std::string log_path;
    std::vector<std::string> args = {"--num-kv-blocks", "64"};
    args.insert(args.end(), way.args.begin(), way.args.end());
    const int port = StartServerProcess("gqa_server_key_run", args, &pid, way.env, &log_path);
    ASSERT_NE(port, 0) << "gqa-server did not come up";
    httplib::Client c("127.0.0.1", port);
    EXPECT_EQ(c.Post("/v1/completions", R"({"prompt": [1], "max_tokens": 1})", "application/json")->status, 401);
    httplib::Headers h = {{"Authorization", "Bearer " + way.key}};
    EXPECT_EQ(c.Post("/v1/completions", h, R"({"prompt": [1], "max_tokens": 1})", "application/json")->status, 200);
    kill(pid, SIGTERM);
    waitpid(pid, nullptr, 0);
    std::ifstream in(log_path);
    const std::string log((std::istreambuf_iterator<char>(in)), {});
    EXPECT_NE(log.find("gqa: loading "), std::string::npos) << log;
    EXPECT_NE(log.find("gqa: loaded "), std::string::npos) << log;
    EXPECT_EQ(log.find(way.key), std::string::npos) << "the key is not logged";
  }
}

// A config whose sizes multiply past 64 bits is refused with a message
// naming a field by every program that reads it (it died with SIGFPE).
TEST(ServerProcessTest, OverflowingConfigIsRefusedByEveryProgram) {
  const std::string dir = testing::ProcessTempDir("gqa_overflow_model");
  fs::create_directories(dir);
  for (const auto& e : fs::directory_iterator(ModelDir())) {
    fs::copy_file(e.path(), fs::path(dir) / e.path().filename(), fs::copy_options::overwrite_existing);
  }
  std::ifstream in(fs::path(dir) / "config.json");
  Json cfg = Json::parse(in);
  in.close();
  cfg["num_attention_heads"] = 1 << 30;
  cfg["num_key_value_heads"] = 1 << 30;
  cfg["num_hidden_layers"] = 1 << 30;
  cfg["head_dim"] = 1024;
  std::ofstream(fs::path(dir) / "config.json") << cfg.dump();
  const std::string bin = GQA_BIN_DIR;
  for (const std::string& cmd : {bin + "/gqa-plan --config " + dir + "/config.json --tp 2",
                                 bin + "/gqa-generate --model " + dir + " --prompt-ids 1,2",
                                 bin + "/gqa-server --model " + dir + " --http-port 0 --grpc-port 0"}) {
    FILE* p = popen((cmd + " 2>&1").c_str(), "r");
    std::string out;
    char b[4096];
    while (size_t n = fread(b, 1, sizeof(b), p)) out.append(b, n);
    const int status = pclose(p);
    EXPECT_TRUE(WIFEXITED(status)) << cmd << ": killed by a signal\n" << out;
    EXPECT_NE(WEXITSTATUS(status), 0) << cmd;
    EXPECT_NE(out.find("'num_key_value_heads'"), std::string::npos) << cmd << "\n" << out;
  }
}

// Runs gqa-server on `model` until it exits or `limit` passes (then kills
// it); the exit status (-1 if it had to be killed), the seconds it ran and
// its log. With `sigterm_after`, sends SIGTERM once the log holds that text.
struct ServerExit {
  int status = -1;
  double seconds = 0;
  std::string log;
};
ServerExit RunServerUntilExit(const std::string& tag, const std::string& model, double limit,
                              const std::string& sigterm_after = "") {
  const std::string dir = testing::ProcessTempDir(tag);
  fs::create_directories(dir);
  const std::string log_file = dir + "/server.log";
  auto read_log = [&] {
    std::ifstream in(log_file);
    return std::string((std::istreambuf_iterator<char>(in)), {});
  };
  const auto start = std::chrono::steady_clock::now();
  ServerProcess server;
  const absl::Status spawned =
      server.Spawn(std::string(GQA_BIN_DIR) + "/gqa-server", {"--model", model, "--num-kv-blocks", "16"}, log_file);
  ServerExit r;
  if (!spawned.ok()) {
    ADD_FAILURE() << spawned;
    return r;
  }
  const pid_t pid = server.Release();
  bool signalled = sigterm_after.empty();
  for (;;) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      r.status = status;
      break;
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (r.seconds > limit) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      break;
    }
    if (!signalled && read_log().find(sigterm_after) != std::string::npos) {
      kill(pid, SIGTERM);
      signalled = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.log = read_log();
  return r;
}

// Every damaged model directory makes gqa-server exit non-zero at once with a
// message naming the file (these once hung it for good, ignoring SIGTERM).
TEST(ServerProcessTest, ModelThatCannotLoadEndsTheProcess) {
  SyntheticModelSpec spec;
  spec.layers = 1;
  auto raw = [](const std::string& header) {
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[i] = char((uint64_t(header.size()) >> (8 * i)) & 0xff);
    return out + header + std::string(16, '\1');
  };
  auto nested = [](int depth) { return std::string(depth, '[') + std::string(depth, ']'); };
  struct Case {
    std::string name;
    std::string file;      // written into the directory (empty: a real checkpoint is kept)
    std::string contents;
    std::string message;   // expected in the log
  };
  std::string huge_length = raw("{}");
  for (int i = 0; i < 8; ++i) huge_length[i] = '\xff';
  std::string past_end = raw("{}");
  past_end[0] = 100;
  const std::string cfg = SyntheticConfigJson(spec).dump();
  Json no_arch = SyntheticConfigJson(spec);
  no_arch.erase("architectures");
  const std::vector<Case> cases = {
      {"array_header", "model.safetensors", raw("[1,2]"), "not a JSON object"},
      {"text_header", "model.safetensors", raw("{nope"), "not a JSON object"},
      {"huge_length", "model.safetensors", huge_length, "exceeds"},
      {"past_end", "model.safetensors", past_end, "past the end"},
      {"negative_offset", "model.safetensors", raw(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})"),
       "non-negative"},
      {"overflowing_shape", "model.safetensors",
       raw(R"({"w":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,4]}})"), "too large"},
      {"q4", "model.safetensors", raw(R"({"w":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}})"), "'Q4'"},
      {"integer_weight", "", "", "weights must be F32, F16 or BF16"},
      {"empty_file", "model.safetensors", "", "too small"},
      {"config_array", "config.json", "[]", "not a JSON object"},
      {"config_no_arch", "config.json", no_arch.dump(), "'architectures'"},
      {"config_deep", "config.json", cfg.substr(0, cfg.size() - 1) + R"(,"x":)" + nested(100000) + "}", "deeper than 64"},
      {"index_escape", "model.safetensors.index.json",
       R"({"weight_map":{"model.norm.weight":"../model.safetensors"}})", "not a file in the directory"},
      {"tokenizer_deep", "tokenizer.json", nested(100000), "deeper than 64"},
  };
  for (const Case& c : cases) {
    const std::string dir = testing::ProcessTempDir("gqa_damaged_" + c.name);
    fs::remove_all(dir);
    ASSERT_OK(WriteSyntheticModel(spec, dir));
    std::string named = dir + "/" + c.file;
    if (c.name == "integer_weight") {
      std::vector<TensorToWrite> tensors = SyntheticTensors(spec);
      for (TensorToWrite& t : tensors)
        if (t.name == "model.norm.weight") t.dtype_name = "I32";
      ASSERT_OK(WriteSafetensors(dir + "/model.safetensors", tensors));
      named = dir + "/model.safetensors";
    } else {
      std::ofstream(named, std::ios::binary | std::ios::trunc) << c.contents;
    }
    if (c.file == "tokenizer.json") named = dir + ": tokenizer.json";
    const ServerExit r = RunServerUntilExit("gqa_damaged_run", dir, 20);
    ASSERT_NE(r.status, -1) << c.name << ": still running after 20 s\n" << r.log;
    EXPECT_TRUE(WIFEXITED(r.status)) << c.name << ": killed by a signal\n" << r.log;
    EXPECT_NE(WEXITSTATUS(r.status), 0) << c.name;
    EXPECT_NE(r.log.find(c.message), std::string::npos) << c.name << "\n" << r.log;
    EXPECT_NE(r.log.find(named), std::string::npos) << c.name << ": the file is named\n" << r.log;
    // Start-up and the failed load together; well under a second when idle.
    EXPECT_LT(r.seconds, 5.0) << c.name;
  }
}

// SIGTERM while the model loads ends the process (it was ignored there).
TEST(ServerProcessTest, SigtermWhileLoadingExits) {
  const ServerExit r = RunServerUntilExit("gqa_sigterm_loading", ModelDir(), 20, "loading the model");
  ASSERT_NE(r.status, -1) << "still running after 20 s\n" << r.log;
  EXPECT_LT(r.seconds, 10.0);
}

// The program itself: SIGTERM while a streamed request runs lets it finish,
// refuses new work, and exits 0.
// A streamed completion of max_tokens tokens on its own thread: every chunk
// is appended to *body and counted in *chunks.
std::thread StreamInBackground(int port, int max_tokens, std::atomic<int>* chunks, std::string* body) {
  return std::thread([=] {
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = Json{{"prompt", {1, 2}}, {"max_tokens", max_tokens}, {"ignore_eos", true}, {"stream", true}}.dump();
    req.set_header("Content-Type", "application/json");
    req.content_receiver = [=](const char* data, size_t len, uint64_t, uint64_t) {
      body->append(data, len);
      ++*chunks;
      return true;
    };
    httplib::Response res;
    httplib::Error err;
    httplib::Client sc("127.0.0.1", port);
    sc.set_read_timeout(60, 0);
    sc.send(req, res, err);
  });
}

TEST(ServerProcessTest, SigtermDrainsAndExitsZero) {
  pid_t pid = 0;
  const int http_port =
      StartServerProcess("gqa_server_log", {"--tp", "2", "--num-kv-blocks", "256", "--shutdown-timeout", "60"}, &pid);
  ASSERT_NE(http_port, 0) << "gqa-server did not come up";
  std::atomic<int> chunks{0};
  std::string body;
  std::thread stream = StreamInBackground(http_port, 150, &chunks, &body);
  for (int i = 0; i < 10000 && chunks.load() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_GT(chunks.load(), 0);
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  stream.join();
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_NE(body.find("\"finish_reason\":\"length\""), std::string::npos);
  EXPECT_NE(body.find("data: [DONE]"), std::string::npos);
}

// A second SIGTERM during the drain ends the process at once (128 + signal)
// instead of waiting for the running request.
TEST(ServerProcessTest, SecondSignalDuringTheDrainExitsAtOnce) {
  pid_t pid = 0;
  const int http_port =
      StartServerProcess("gqa_server_second_signal", {"--tp", "1", "--num-kv-blocks", "256", "--shutdown-timeout", "120"}, &pid);
  ASSERT_NE(http_port, 0) << "gqa-server did not come up";
  std::atomic<int> chunks{0};
  std::string body;
  std::thread stream = StreamInBackground(http_port, 500, &chunks, &body);
  for (int i = 0; i < 10000 && chunks.load() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_GT(chunks.load(), 0);
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  // Two signals pending at once count as one: let the first be taken.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  stream.join();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGTERM);
  EXPECT_EQ(body.find("data: [DONE]"), std::string::npos);  // the stream did not get to finish
}

// gqa-server on the CUDA backend's kernels under the interpreter, with more
// ranks than KV heads: the same greedy tokens over HTTP as gqa-generate on
// the CPU.
TEST(ServerProcessTest, CudaSimServerMatchesCpuGenerate) {
  const std::vector<int32_t> prompt = {1, 415, 2936, 9060, 285, 1142, 17};
  const std::vector<int32_t> want = GenerateCli(prompt, 10);
  ASSERT_EQ(want.size(), 10u);
  for (const char* tp : {"2", "4"}) {
    pid_t pid = 0;
    const int port = StartServerProcess(std::string("gqa_server_cuda_sim_tp") + tp, {"--device", "cuda-sim", "--tp", tp, "--num-kv-blocks", "64"}, &pid);
    ASSERT_NE(port, 0) << "gqa-server --device cuda-sim did not come up";
    // A failed assertion below must not leave the server running.
    std::unique_ptr<pid_t, void (*)(pid_t*)> guard(&pid, [](pid_t* p) {
      if (*p > 0) {
        kill(*p, SIGKILL);
        waitpid(*p, nullptr, 0);
      }
    });
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(120, 0);
    const Json body = {{"prompt", prompt}, {"max_tokens", 10}, {"temperature", 0}, {"ignore_eos", true}};
    auto res = c.Post("/v1/completions", body.dump(), "application/json");
    ASSERT_TRUE(res) << "tp=" << tp;
    ASSERT_EQ(res->status, 200) << res->body;
    EXPECT_EQ(Ids(Json::parse(res->body)["choices"][0]), want) << "tp=" << tp;
    kill(pid, SIGTERM);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    pid = 0;
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
}

// The threads of a process (/proc/PID/status), -1 if unreadable.
int ThreadsOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::stoi(line.substr(8));
  }
  return -1;
}

// --max-connections no longer starts a thread per possible connection (it
// started 1,037 for 1024): at start-up and with hundreds of idle keep-alive
// connections the process has a small, bounded number of threads.
TEST(ServerProcessTest, ThreadsDoNotGrowWithMaxConnections) {
  pid_t pid = 0;
  const int port = StartServerProcess("gqa_server_threads", {"--tp", "1", "--threads", "1", "--num-kv-blocks", "64",
                                                             "--max-connections", "1024"}, &pid);
  ASSERT_NE(port, 0) << "gqa-server did not come up";
  const int at_start = ThreadsOf(pid);
  EXPECT_GT(at_start, 0);
  EXPECT_LT(at_start, 50) << "threads at start-up with --max-connections 1024";
  std::vector<std::unique_ptr<httplib::Client>> clients;
  for (int i = 0; i < 200; ++i) {
    clients.push_back(std::make_unique<httplib::Client>("127.0.0.1", port));
    clients.back()->set_keep_alive(true);
    auto res = clients.back()->Get("/health");
    ASSERT_TRUE(res) << i;
    EXPECT_EQ(res->status, 200);
  }
  const int with_idle = ThreadsOf(pid);
  EXPECT_LT(with_idle, 50) << "threads with 200 idle keep-alive connections (" << at_start << " at start-up)";
  std::printf("threads: %d at start-up, %d with 200 idle keep-alive connections\n", at_start, with_idle);
  clients.clear();
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

}  // namespace
}  // namespace gqa
