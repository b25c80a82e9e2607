// gqa-bench serve: the prompts a run sends and the clients that send one
// streamed completion each (OpenAI HTTP /v1/completions with SSE, or gRPC
// gqa.v1.Generation/GenerateStream) and time its tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/serve_stats.h"

namespace gqa {

struct Prompt {
  std::vector<int32_t> ids;  // token-id prompt, or
  std::string text;          // text prompt (when ids is empty)
  int64_t max_tokens = 0;
  int64_t shared_len = 0;    // leading ids (or words) that are the workload's shared prefix
};

// Where prompts come from: random token ids or random words of a fixed
// length, or a JSONL dataset (one object per line: "prompt" as a string or a
// list of token ids, optional "max_tokens" / "output_len").
struct WorkloadOptions {
  std::string kind = "ids";  // ids or text
  int64_t input_len = 128;   // tokens (ids) or words (text)
  int64_t output_len = 128;
  int64_t vocab_size = 1000;  // ids are drawn from [3, vocab_size)
  // Tokens (ids) or words (text) of one prefix that every prompt starts
  // with, before its input_len of its own (chat traffic's system prompt).
  int64_t shared_prefix_len = 0;
  std::string dataset;        // JSONL path; overrides kind
  uint64_t seed = 0;
};

class Workload {
 public:
  static absl::StatusOr<Workload> Create(const WorkloadOptions& o);
  // The i-th prompt (deterministic for the seed); a dataset is cycled.
  Prompt Get(int64_t i) const;
  size_t size() const { return prompts_.size(); }

 private:
  std::vector<Prompt> prompts_;
  WorkloadOptions o_;
};

struct Endpoint {
  enum class Protocol { kHttp, kGrpc } protocol = Protocol::kHttp;
  std::string host;
  int port = 0;
  std::string api_key;
  std::string model;  // "model" field of HTTP requests; empty: not sent
};
absl::StatusOr<Endpoint> ParseEndpoint(const std::string& url);

// Sends one request and waits for its end. Each client is used by one
// thread at a time; it may keep its connection open between requests.
class ServeClient {
 public:
  virtual ~ServeClient() = default;
  // Fills `rec` (start_s is set by the caller); never throws.
  virtual void Send(const Prompt& p, double timeout_s, RequestRecord* rec) = 0;
};

// A factory shared by the threads of a run (the gRPC channel is shared).
class ClientFactory {
 public:
  virtual ~ClientFactory() = default;
  virtual std::unique_ptr<ServeClient> NewClient() = 0;
};
struct RequestOptions {
  bool ignore_eos = true;
  double temperature = 0;  // 0: greedy
};
std::unique_ptr<ClientFactory> MakeClientFactory(const Endpoint& e, const RequestOptions& r);

// GET http://host:port/path; the body, or an error.
absl::StatusOr<std::string> HttpGet(const std::string& host, int port, const std::string& path, double timeout_s);

double SteadySeconds();  // monotonic clock

}  // namespace gqa
