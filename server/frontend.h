// What the gRPC and HTTP front-ends share: turning API requests (text or
// token ids, sampling fields, stop strings) into engine requests, streaming
// detokenized deltas back, admission control, draining, and the metrics.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "engine/engine.h"
#include "server/metrics.h"
#include "tokenizer/tokenizer.h"

namespace gqa {

struct FrontendOptions {
  std::string served_model_name = "gqa-model";
  int max_queued_requests = 256;  // requests waiting for admission beyond this are refused
  int max_prompt_chars = 1 << 22;  // text prompts longer than this are refused before tokenizing
  bool log_json = false;            // one JSON object per request log line instead of key=value text
  // false: special-token text inside chat message content stays text (only
  // the template's own markers become special tokens).
  bool special_tokens_in_content = true;
};

struct ApiRequest {
  std::optional<std::string> prompt_text;  // tokenized with the model's tokenizer
  std::vector<int32_t> prompt_ids;         // used when there is no text
  bool add_special_tokens = true;          // BOS etc. for text prompts (not for chat: the template has them)
  bool parse_special_tokens = false;       // special-token text becomes special ids (rendered chat prompts only)
  std::vector<std::pair<size_t, size_t>> literal_ranges;  // prompt_text bytes where it does not
  GenerationRequest gen;                   // everything but the prompt
  std::vector<std::string> stop;           // stop strings (need a tokenizer)
  std::string request_id;                  // for the log line; made up when empty
};

struct StreamDelta {
  std::string text;                  // new text; empty without a tokenizer or while a character is incomplete
  std::vector<SampledToken> tokens;  // the tokens behind it, with logprobs
};

struct FinalResult {
  FinishReason reason = FinishReason::kNone;
  absl::Status error;
  int prompt_tokens = 0;
  int completion_tokens = 0;
  int cached_tokens = 0;             // prompt tokens whose K/V came from the prefix cache
  std::string text;                  // all text (for unary calls)
  std::vector<SampledToken> tokens;  // all tokens
};

// A rendered chat prompt: the text, and the byte ranges of message content
// in which special-token text must stay text (see special_tokens_in_content).
struct ChatPrompt {
  std::string text;
  std::vector<std::pair<size_t, size_t>> literal_ranges;
};

struct ModelInfo {
  std::string name, architecture;
  int num_q_heads = 0, num_kv_heads = 0, head_dim = 0, num_layers = 0, vocab_size = 0;
  int tp = 1;
  double kv_replication_factor = 1;
  int max_model_len = 0;
  bool has_tokenizer = false;
};

// An Authorization value "Bearer <key>": the scheme in any case (RFC 7235),
// the key compared in time independent of where it differs.
bool BearerMatches(absl::string_view header, absl::string_view key);

class Frontend {
 public:
  Frontend(std::unique_ptr<Engine> engine, std::unique_ptr<Tokenizer> tokenizer, const FrontendOptions& options);
  ~Frontend();

  // Validates, tokenizes and submits. on_delta runs for each new piece of
  // output, on_done exactly once at the end (also after Cancel). Errors:
  // InvalidArgument (bad input), ResourceExhausted (queue full),
  // Unavailable (draining).
  using DeltaFn = std::function<void(const StreamDelta&)>;
  using DoneFn = std::function<void(const FinalResult&)>;
  absl::StatusOr<int64_t> Start(ApiRequest request, DeltaFn on_delta, DoneFn on_done);
  // Runs a request to the end; cancels it (reason aborted) when the
  // deadline passes or `cancelled` returns true.
  absl::StatusOr<FinalResult> Run(ApiRequest request, std::chrono::steady_clock::time_point deadline,
                                  std::function<bool()> cancelled = nullptr);
  // Aborts a running request: its blocks are freed before the next step.
  void Cancel(int64_t id);
  // Aborts every request in flight.
  void CancelAll();

  absl::StatusOr<std::vector<int32_t>> Tokenize(const std::string& text, bool add_special_tokens,
                                                bool parse_special_tokens = false,
                                                const std::vector<std::pair<size_t, size_t>>& literal_ranges = {}) const;
  absl::StatusOr<std::string> Detokenize(const std::vector<int32_t>& ids) const;
  // Renders the chat template for OpenAI-style messages, with the generation
  // prompt; `extra` adds template variables (tools, chat_template_kwargs).
  absl::StatusOr<std::string> RenderChat(const nlohmann::json& messages,
                                         const nlohmann::json& extra = nlohmann::json::object()) const;
  // The same, with the ranges to encode as plain text when
  // special_tokens_in_content is off. Encode with parse_special_tokens.
  absl::StatusOr<ChatPrompt> RenderChatPrompt(const nlohmann::json& messages,
                                              const nlohmann::json& extra = nlohmann::json::object()) const;

  const ModelInfo& info() const { return info_; }
  Metrics& metrics() { return metrics_; }
  const Engine& engine() const { return *engine_; }

  // Refuses new requests from now on; WaitIdle waits for running ones.
  void BeginDrain();
  bool draining() const;
  bool WaitIdle(std::chrono::milliseconds timeout);
  int inflight() const;

 private:
  struct State;
  void OnEngineOutput(const std::shared_ptr<State>& st, const RequestOutput& out);
  void Complete(const std::shared_ptr<State>& st, FinishReason reason, absl::Status error);

  std::unique_ptr<Engine> engine_;
  std::unique_ptr<Tokenizer> tokenizer_;
  FrontendOptions options_;
  ModelInfo info_;
  Metrics metrics_;

  mutable std::mutex mu_;
  std::condition_variable idle_cv_;
  std::map<int64_t, std::shared_ptr<State>> active_;
  bool draining_ = false;

  std::atomic<int64_t>* requests_total_;
  std::atomic<int64_t>* prompt_tokens_total_;
  std::atomic<int64_t>* generation_tokens_total_;
  std::atomic<int64_t>* rejected_total_;
  Histogram* ttft_;
  Histogram* tpot_;
  Histogram* e2e_;
  Histogram* queue_time_;
};

}  // namespace gqa
