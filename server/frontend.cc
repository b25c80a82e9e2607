#include "server/frontend.h"

#include <algorithm>
#include <cstdio>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "base/utf8.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/detokenizer.h"
#include "tokenizer/stop_strings.h"

namespace gqa {

using Clock = std::chrono::steady_clock;

struct Frontend::State {
  int64_t id = 0;
  std::string request_id;
  DeltaFn on_delta;
  DoneFn on_done;
  std::unique_ptr<StreamDetokenizer> detok;
  std::unique_ptr<StopStringMatcher> stops;
  FinalResult result;
  bool finished = false;
  Clock::time_point arrival, first_token, last_token;
};

namespace {

// Text for one log line: quotes, backslashes, control characters (C0, DEL,
// C1) and bytes that are not UTF-8 are escaped, so that no value can end
// the line or drive the terminal; with `bare`, spaces too (an unquoted value).
std::string LogEscape(absl::string_view s, bool bare = false) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = s[i];
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
      ++i;
    } else if (c == '\n') {
      out += "\\n";
      ++i;
    } else if (c < 0x20 || c == 0x7f || (bare && c == ' ')) {
      out += absl::StrFormat("\\x%02x", c);
      ++i;
    } else if (c < 0x80) {
      out += static_cast<char>(c);
      ++i;
    } else {
      // One UTF-8 sequence, or an escaped byte.
      const std::string_view text(s.data(), s.size());
      const int len = Utf8CharLen(text, i);
      const bool ok = len > 0;
      size_t next = i;
      const uint32_t cp = ok ? NextCodePoint(text, &next) : 0;
      if (!ok) {
        out += absl::StrFormat("\\x%02x", c);
        ++i;
      } else if (cp >= 0x80 && cp < 0xa0) {
        out += absl::StrFormat("\\u%04x", cp);
        i += len;
      } else {
        out.append(s.data() + i, len);
        i += len;
      }
    }
  }
  return out;
}

std::vector<double> LatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
}
double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
}  // namespace

bool BearerMatches(absl::string_view header, absl::string_view key) {
  if (header.size() < 7 || !absl::EqualsIgnoreCase(header.substr(0, 6), "bearer") || header[6] != ' ') return false;
  const absl::string_view token = absl::StripAsciiWhitespace(header.substr(7));
  unsigned diff = token.size() != key.size();
  for (size_t i = 0; i < key.size(); ++i) diff |= static_cast<unsigned char>(i < token.size() ? token[i] : 0) ^
                                                  static_cast<unsigned char>(key[i]);
  return diff == 0 && !key.empty();
}

Frontend::Frontend(std::unique_ptr<Engine> engine, std::unique_ptr<Tokenizer> tokenizer, const FrontendOptions& options)
    : engine_(std::move(engine)), tokenizer_(std::move(tokenizer)), options_(options) {
  const ModelConfig& c = engine_->executor().config();
  info_.name = options_.served_model_name;
  info_.architecture = std::string(ArchitectureName(c.arch));
  info_.num_q_heads = c.num_q_heads;
  info_.num_kv_heads = c.num_kv_heads;
  info_.head_dim = c.head_dim;
  info_.num_layers = c.num_layers;
  info_.vocab_size = c.vocab_size;
  info_.tp = engine_->executor().tp();
  info_.kv_replication_factor = engine_->executor().plan().KvReplicationFactor();
  info_.max_model_len = engine_->max_model_len();
  info_.has_tokenizer = tokenizer_ != nullptr;

  const Engine* e = engine_.get();
  metrics_.Gauge("gqa_num_requests_running", "Requests running in the engine.", [e] { return e->Stats().running; });
  metrics_.Gauge("gqa_num_requests_waiting", "Requests waiting for admission.", [e] { return e->Stats().waiting; });
  metrics_.Gauge("gqa_kv_cache_usage_ratio",
                 "Fraction of KV blocks held by running requests (blocks that only keep a cached prefix count as "
                 "free: they are reused or evicted on demand).",
                 [e] { return e->Stats().KvUsedFraction(); });
  metrics_.Gauge("gqa_kv_cache_cached_free_ratio",
                 "Fraction of KV blocks that no request holds but that keep a cached prefix.",
                 [e] { return e->Stats().KvCachedFraction(); });
  metrics_.CounterRead("gqa_prefix_cache_queries_total",
                       "Prompt tokens looked up in the prefix cache when requests were admitted.",
                       [e] { return double(e->Stats().prefix_cache_queries); });
  metrics_.CounterRead("gqa_prefix_cache_hits_total", "Of them, tokens whose K/V came from the prefix cache.",
                       [e] { return double(e->Stats().prefix_cache_hits); });
  const double factor = info_.kv_replication_factor;
  metrics_.Gauge("gqa_kv_replication_factor", "KV heads held over all ranks / KV heads of the model.",
                 [factor] { return factor; });
  metrics_.CounterRead("gqa_num_preemptions_total", "Sequences preempted (and recomputed later).",
                 [e] { return double(e->Stats().preemptions); });
  requests_total_ = metrics_.Counter("gqa_requests_total", "Requests accepted.");
  rejected_total_ = metrics_.Counter("gqa_requests_rejected_total", "Requests refused (bad input, overload, draining).");
  prompt_tokens_total_ = metrics_.Counter("gqa_prompt_tokens_total", "Prompt tokens of accepted requests.");
  generation_tokens_total_ = metrics_.Counter("gqa_generation_tokens_total", "Tokens generated.");
  ttft_ = metrics_.AddHistogram("gqa_time_to_first_token_seconds", "Time from arrival to the first token.", LatencyBuckets());
  tpot_ = metrics_.AddHistogram("gqa_time_per_output_token_seconds", "Time between output tokens.", LatencyBuckets());
  e2e_ = metrics_.AddHistogram("gqa_e2e_request_latency_seconds", "Time from arrival to finish.", LatencyBuckets());
  queue_time_ = metrics_.AddHistogram("gqa_request_queue_time_seconds", "Time from arrival to first scheduling.",
                                      LatencyBuckets());
}

Frontend::~Frontend() { engine_.reset(); }

absl::StatusOr<std::vector<int32_t>> Frontend::Tokenize(const std::string& text, bool add_special_tokens,
                                                        bool parse_special_tokens,
                                                        const std::vector<std::pair<size_t, size_t>>& literal_ranges) const {
  if (!tokenizer_) return absl::InvalidArgumentError("this model directory has no tokenizer files: send token ids");
  if (text.size() > size_t(options_.max_prompt_chars)) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt has ", text.size(), " bytes; the limit is ",
                                                   options_.max_prompt_chars));
  }
  EncodeOptions opts;
  opts.add_special_tokens = add_special_tokens;
  opts.parse_special_tokens = parse_special_tokens;
  opts.literal_ranges = literal_ranges;
  return tokenizer_->Encode(text, opts);
}

absl::StatusOr<std::string> Frontend::Detokenize(const std::vector<int32_t>& ids) const {
  if (!tokenizer_) return absl::InvalidArgumentError("this model directory has no tokenizer files");
  return tokenizer_->Decode(ids, /*skip_special_tokens=*/false);
}

absl::StatusOr<std::string> Frontend::RenderChat(const nlohmann::json& messages, const nlohmann::json& extra) const {
  ASSIGN_OR_RETURN(ChatPrompt p, RenderChatPrompt(messages, extra));
  return std::move(p.text);
}

absl::StatusOr<ChatPrompt> Frontend::RenderChatPrompt(const nlohmann::json& messages,
                                                      const nlohmann::json& extra) const {
  if (!tokenizer_) return absl::InvalidArgumentError("this model directory has no tokenizer files: chat needs one");
  if (tokenizer_->chat_template() == nullptr) {
    return absl::InvalidArgumentError("the model's tokenizer_config.json has no chat_template");
  }
  nlohmann::ordered_json vars = nlohmann::ordered_json::parse(extra.dump());
  vars["messages"] = nlohmann::ordered_json::parse(messages.dump());
  vars["add_generation_prompt"] = true;
  ChatPrompt out;
  if (options_.special_tokens_in_content) {
    ASSIGN_OR_RETURN(out.text, tokenizer_->ApplyChatTemplate(vars));  // fills bos_token / eos_token
    return out;
  }
  // Special-token text in content is wrapped in markers that no client can
  // guess (a random nonce); after rendering, each marked span becomes a
  // literal range and the markers go.
  std::random_device rd;
  const std::string nonce = absl::StrFormat("%08x%08x", rd(), rd());
  const std::string open = "[[gqa-literal-" + nonce + "]]", close = "[[/gqa-literal-" + nonce + "]]";
  std::vector<std::string> specials = tokenizer_->SpecialTokenTexts();
  std::sort(specials.begin(), specials.end(), [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  bool first_byte[256] = {};
  for (const std::string& t : specials) {
    if (!t.empty()) first_byte[static_cast<unsigned char>(t[0])] = true;
  }
  auto mark = [&](nlohmann::ordered_json& v) {
    if (!v.is_string()) return;
    const std::string text = v.get<std::string>();
    std::string marked;
    for (size_t i = 0; i < text.size();) {
      const std::string* hit = nullptr;
      if (first_byte[static_cast<unsigned char>(text[i])]) {
        for (const std::string& t : specials) {
          if (!t.empty() && text.compare(i, t.size(), t) == 0) {
            hit = &t;
            break;
          }
        }
      }
      if (hit == nullptr) {
        marked += text[i++];
      } else {
        absl::StrAppend(&marked, open, *hit, close);
        i += hit->size();
      }
    }
    v = marked;
  };
  for (auto& m : vars["messages"]) {
    if (!m.is_object() || !m.contains("content")) continue;
    if (m["content"].is_array()) {
      for (auto& part : m["content"]) {
        if (part.is_object() && part.contains("text")) mark(part["text"]);
      }
    } else {
      mark(m["content"]);
    }
  }
  ASSIGN_OR_RETURN(std::string rendered, tokenizer_->ApplyChatTemplate(vars));
  out.text.reserve(rendered.size());
  for (size_t i = 0; i < rendered.size();) {
    if (rendered.compare(i, open.size(), open) == 0) {
      const size_t end = rendered.find(close, i + open.size());
      if (end != std::string::npos) {
        const size_t begin = out.text.size();
        out.text.append(rendered, i + open.size(), end - i - open.size());
        out.literal_ranges.emplace_back(begin, out.text.size());
        i = end + close.size();
        continue;
      }
      i += open.size();  // an unmatched marker (the template cut it) is dropped
      continue;
    }
    if (rendered.compare(i, close.size(), close) == 0) {
      i += close.size();
      continue;
    }
    out.text += rendered[i++];
  }
  return out;
}

absl::StatusOr<int64_t> Frontend::Start(ApiRequest req, DeltaFn on_delta, DoneFn on_done) {
  auto refuse = [&](absl::Status st) {
    rejected_total_->fetch_add(1);
    return st;
  };
  if (draining()) return refuse(absl::UnavailableError("the server is shutting down"));
  // Waiting requests first take the free sequence slots, then the waiting
  // room of max_queued_requests (0: none, admit only when a slot is free).
  const EngineStats stats = engine_->Stats();
  const int free_slots = std::max(0, engine_->options().max_num_seqs - stats.running);
  if (stats.waiting >= free_slots + options_.max_queued_requests) {
    return refuse(absl::ResourceExhaustedError(
        options_.max_queued_requests == 0
            ? absl::StrCat("the server is busy: all ", engine_->options().max_num_seqs,
                           " sequence slots are taken and there is no waiting room; retry later")
            : absl::StrCat("the server is overloaded: ", options_.max_queued_requests,
                           " requests are already waiting; retry later")));
  }
  if (req.prompt_text) {
    auto ids = Tokenize(*req.prompt_text, req.add_special_tokens, req.parse_special_tokens, req.literal_ranges);
    if (!ids.ok()) return refuse(ids.status());
    req.gen.prompt = std::move(*ids);
  } else {
    req.gen.prompt = std::move(req.prompt_ids);
  }
  if (req.gen.prompt.empty()) return refuse(absl::InvalidArgumentError("the prompt is empty"));
  if (!req.stop.empty() && !tokenizer_) {
    return refuse(absl::InvalidArgumentError("stop strings need the model's tokenizer; use stop_token_ids"));
  }
  auto st = std::make_shared<State>();
  st->on_delta = std::move(on_delta);
  st->on_done = std::move(on_done);
  st->arrival = Clock::now();
  if (tokenizer_) st->detok = std::make_unique<StreamDetokenizer>(*tokenizer_, /*skip_special_tokens=*/true);
  if (!req.stop.empty()) st->stops = std::make_unique<StopStringMatcher>(req.stop);
  st->result.prompt_tokens = static_cast<int>(req.gen.prompt.size());
  const int prompt_tokens = st->result.prompt_tokens;

  // Held across Submit so that an early finish finds the request registered.
  std::lock_guard<std::mutex> lock(mu_);
  absl::StatusOr<int64_t> id =
      engine_->Submit(std::move(req.gen), [this, st](const RequestOutput& out) { OnEngineOutput(st, out); });
  if (!id.ok()) return refuse(id.status());
  st->id = *id;
  st->request_id = req.request_id.empty() ? absl::StrCat("req-", *id) : req.request_id;
  active_[*id] = st;
  requests_total_->fetch_add(1);
  prompt_tokens_total_->fetch_add(prompt_tokens);
  return *id;
}

void Frontend::OnEngineOutput(const std::shared_ptr<State>& st, const RequestOutput& out) {
  if (st->finished) return;  // already ended by a stop string
  if (out.queue_seconds >= 0) queue_time_->Observe(out.queue_seconds);
  StreamDelta delta;
  bool stopped = false;
  for (const SampledToken& t : out.tokens) {
    const Clock::time_point now = Clock::now();
    if (st->result.tokens.empty()) {
      st->first_token = now;
      ttft_->Observe(Seconds(now - st->arrival));
    } else {
      tpot_->Observe(Seconds(now - st->last_token));
    }
    st->last_token = now;
    generation_tokens_total_->fetch_add(1);
    st->result.tokens.push_back(t);
    ++st->result.completion_tokens;
    st->result.cached_tokens = out.cached_tokens;
    delta.tokens.push_back(t);
    std::string piece;
    if (st->detok) {
      absl::StatusOr<std::string> p = st->detok->Push(t.token);
      if (p.ok()) piece = std::move(*p);  // ids past the tokenizer's vocabulary have no text
    }
    if (st->stops) {
      StopStringMatcher::Result r = st->stops->Push(piece);
      piece = std::move(r.text);
      stopped = r.stopped;
    }
    delta.text += piece;
    if (stopped) break;
  }
  if (out.finished && !stopped && out.reason != FinishReason::kError) {
    // Flush what the detokenizer and the stop matcher held back.
    std::string tail = st->detok ? st->detok->Finish() : "";
    if (st->stops) {
      StopStringMatcher::Result r = st->stops->Push(tail);
      tail = r.text + (r.stopped ? "" : st->stops->Finish());
    }
    delta.text += tail;
  }
  st->result.text += delta.text;
  if (!delta.text.empty() || !delta.tokens.empty()) {
    if (st->on_delta) st->on_delta(delta);
  }
  if (stopped) {
    Complete(st, FinishReason::kStop, absl::OkStatus());
    engine_->Abort(st->id);  // frees its blocks; the aborted event is ignored
  } else if (out.finished) {
    Complete(st, out.reason, out.error);
  }
}

void Frontend::Complete(const std::shared_ptr<State>& st, FinishReason reason, absl::Status error) {
  st->finished = true;
  st->result.reason = reason;
  st->result.error = std::move(error);
  const double latency = Seconds(Clock::now() - st->arrival);
  e2e_->Observe(latency);
  const double ttft = st->result.tokens.empty() ? -1 : Seconds(st->first_token - st->arrival);
  {
    // Start holds mu_ until the request's ids are set: a request that ends
    // during Submit waits here for them.
    std::lock_guard<std::mutex> lock(mu_);
    active_.erase(st->id);
    idle_cv_.notify_all();
  }
  std::string line;
  if (options_.log_json) {
    nlohmann::json j = {{"event", "request"}, {"request_id", st->request_id},
                        {"prompt_tokens", st->result.prompt_tokens}, {"output_tokens", st->result.completion_tokens},
                        {"ttft_s", ttft}, {"latency_s", latency}, {"finish", FinishReasonName(reason)}};
    if (!st->result.error.ok()) j["error"] = std::string(st->result.error.message());
    line = j.dump(-1, ' ', /*ensure_ascii=*/true, nlohmann::json::error_handler_t::replace);
  } else {
    line = absl::StrFormat("gqa: request id=%s prompt_tokens=%d output_tokens=%d ttft_s=%.4f latency_s=%.4f finish=%s%s",
                           LogEscape(st->request_id, /*bare=*/true), st->result.prompt_tokens, st->result.completion_tokens, ttft,
                           latency, FinishReasonName(reason),
                           st->result.error.ok() ? "" : absl::StrCat(" error=\"", LogEscape(st->result.error.message()), "\""));
  }
  std::fprintf(stderr, "%s\n", line.c_str());
  if (st->on_done) st->on_done(st->result);
}

void Frontend::Cancel(int64_t id) { engine_->Abort(id); }

void Frontend::CancelAll() {
  std::vector<int64_t> ids;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, st] : active_) ids.push_back(id);
  }
  for (int64_t id : ids) engine_->Abort(id);
}

absl::StatusOr<FinalResult> Frontend::Run(ApiRequest request, Clock::time_point deadline,
                                          std::function<bool()> cancelled) {
  struct Wait {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    FinalResult result;
  };
  auto w = std::make_shared<Wait>();
  ASSIGN_OR_RETURN(int64_t id, Start(std::move(request), nullptr, [w](const FinalResult& r) {
                     std::lock_guard<std::mutex> lock(w->mu);
                     w->result = r;
                     w->done = true;
                     w->cv.notify_all();
                   }));
  bool timed_out = false, cancel_sent = false;
  std::unique_lock<std::mutex> lock(w->mu);
  while (!w->done) {
    w->cv.wait_for(lock, std::chrono::milliseconds(20));
    if (w->done || cancel_sent) continue;
    timed_out = Clock::now() >= deadline;
    if (timed_out || (cancelled && cancelled())) {
      cancel_sent = true;
      lock.unlock();
      Cancel(id);
      lock.lock();
    }
  }
  if (timed_out && w->result.reason == FinishReason::kAborted) {
    return absl::DeadlineExceededError("the deadline passed; the request was aborted");
  }
  return w->result;
}

void Frontend::BeginDrain() {
  std::lock_guard<std::mutex> lock(mu_);
  draining_ = true;
}

bool Frontend::draining() const {
  std::lock_guard<std::mutex> lock(mu_);
  return draining_;
}

int Frontend::inflight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(active_.size());
}

bool Frontend::WaitIdle(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return idle_cv_.wait_for(lock, timeout, [&] { return active_.empty(); });
}

}  // namespace gqa
