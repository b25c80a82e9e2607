#include "server/http_request.h"

#include <algorithm>

namespace gqa::http_request {

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
  if (j.contains("cache_salt") && !j["cache_salt"].is_null()) {
    if (!j["cache_salt"].is_string() || j["cache_salt"].get<std::string>().empty()) {
      throw BadField{"cache_salt", "'cache_salt' must be a non-empty string"};
    }
    r->gen.cache_salt = j["cache_salt"].get<std::string>();
  }
  r->request_id = Get<std::string>(j, "request_id", "");
  (void)Get<std::string>(j, "user", "");
  *stream = Get<bool>(j, "stream", false);
  *include_usage = false;
  if (j.contains("stream_options") && j["stream_options"].is_object()) {
    *include_usage = Get<bool>(j["stream_options"], "include_usage", false);
  }
}

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

absl::Status ParseGenerateBody(const Json& j, bool chat, const Frontend& fe, GenerateBody* out) {
  ApiRequest& r = out->request;
  ParseCommon(j, fe.info(), &r, &out->stream, &out->include_usage);
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
    if (!prompt.ok()) return prompt.status();
    r.prompt_text = std::move(prompt->text);
    r.literal_ranges = std::move(prompt->literal_ranges);
    r.add_special_tokens = false;  // the template writes BOS itself
    r.parse_special_tokens = true;  // and its role markers are special tokens
    const int top = Get<int>(j, "top_logprobs", 0);
    if (top < 0 || top > 20) throw BadField{"top_logprobs", "'top_logprobs' must be in 0..20"};
    if (Get<bool>(j, "logprobs", false)) out->logprobs = std::max(1, top);
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
    out->logprobs = Get<int>(j, "logprobs", 0);
    if (out->logprobs < 0 || out->logprobs > 20) throw BadField{"logprobs", "'logprobs' must be in 0..20"};
  }
  r.gen.sampling.logprobs = out->logprobs;
  return absl::OkStatus();
}

}  // namespace gqa::http_request
