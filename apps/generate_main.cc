// gqa-generate: runs one prompt (--prompt-ids) or a file of requests
// (--prompts-file, one JSON object a line) through the serving engine on the
// CPU backend and prints one JSON line per request, in input order.
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "apps/engine_flags.h"
#ifdef GQA_HAVE_TOKENIZER
#include <filesystem>

#include "tokenizer/tokenizer.h"
#endif

namespace gqa {
namespace {

using Json = nlohmann::json;

// Defaults of a request line: the command line's values.
struct Defaults {
  int max_new_tokens = 16;
  double temperature = 0;
  std::optional<uint64_t> seed;
  bool ignore_eos = false;
};

absl::Status FieldError(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("'", field, "' ", what));
}

template <typename T>
absl::Status Read(const Json& j, const char* field, T* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if constexpr (std::is_same_v<T, bool>) {
    if (!it->is_boolean()) return FieldError(field, "must be true or false");
  } else if constexpr (std::is_integral_v<T>) {
    if (!it->is_number_integer()) return FieldError(field, "must be an integer");
  } else {
    if (!it->is_number()) return FieldError(field, "must be a number");
  }
  *out = it->get<T>();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> ReadIds(const Json& j, const char* field) {
  std::vector<int32_t> ids;
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return ids;
  if (!it->is_array()) return FieldError(field, "must be a list of token ids");
  for (const Json& e : *it) {
    if (!e.is_number_integer()) return FieldError(field, "must hold integers");
    const int64_t v = e.get<int64_t>();
    if (v < INT32_MIN || v > INT32_MAX) return FieldError(field, "holds an id out of range");
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

absl::StatusOr<GenerationRequest> ParseRequest(const std::string& line, const Defaults& d) {
  const Json j = Json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("the line is not a JSON object");
  static const std::set<std::string> known = {"prompt_ids", "max_new_tokens", "max_tokens", "temperature", "top_k", "top_p",
                                              "min_p", "seed", "presence_penalty", "frequency_penalty",
                                              "repetition_penalty", "stop_token_ids", "ignore_eos", "logprobs"};
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!known.count(it.key())) return FieldError(it.key(), "is not a known field");
  }
  GenerationRequest r;
  ASSIGN_OR_RETURN(r.prompt, ReadIds(j, "prompt_ids"));
  if (r.prompt.empty()) return FieldError("prompt_ids", "must be a non-empty list of token ids");
  r.max_tokens = d.max_new_tokens;
  RETURN_IF_ERROR(Read(j, "max_tokens", &r.max_tokens));
  RETURN_IF_ERROR(Read(j, "max_new_tokens", &r.max_tokens));
  SamplingParams& s = r.sampling;
  s.temperature = d.temperature;
  s.seed = d.seed;
  RETURN_IF_ERROR(Read(j, "temperature", &s.temperature));
  RETURN_IF_ERROR(Read(j, "top_k", &s.top_k));
  RETURN_IF_ERROR(Read(j, "top_p", &s.top_p));
  RETURN_IF_ERROR(Read(j, "min_p", &s.min_p));
  RETURN_IF_ERROR(Read(j, "presence_penalty", &s.presence_penalty));
  RETURN_IF_ERROR(Read(j, "frequency_penalty", &s.frequency_penalty));
  RETURN_IF_ERROR(Read(j, "repetition_penalty", &s.repetition_penalty));
  RETURN_IF_ERROR(Read(j, "logprobs", &s.logprobs));
  if (j.contains("seed") && !j["seed"].is_null()) {
    uint64_t seed = 0;
    if (!j["seed"].is_number_unsigned()) return FieldError("seed", "must be a non-negative integer");
    seed = j["seed"].get<uint64_t>();
    s.seed = seed;
  }
  r.ignore_eos = d.ignore_eos;
  RETURN_IF_ERROR(Read(j, "ignore_eos", &r.ignore_eos));
  ASSIGN_OR_RETURN(r.stop_token_ids, ReadIds(j, "stop_token_ids"));
  return r;
}

struct Outcome {
  Json line;
  bool done = false;
};

absl::Status Run(const Flags& f, MpiJob* mpi) {
  const bool batch = f.Has("prompts-file");
  if (batch == f.Has("prompt-ids")) return absl::InvalidArgumentError("give exactly one of --prompt-ids and --prompts-file");
  Defaults d;
  ASSIGN_OR_RETURN(int64_t max_new, f.GetInt("max-new-tokens"));
  ASSIGN_OR_RETURN(d.temperature, f.GetDouble("temperature"));
  if (max_new < 1 || max_new > (1 << 24)) return absl::InvalidArgumentError("--max-new-tokens must be >= 1");
  d.max_new_tokens = static_cast<int>(max_new);
  d.ignore_eos = f.GetBool("ignore-eos");
  if (f.Has("seed")) {
    ASSIGN_OR_RETURN(int64_t seed, f.GetInt("seed"));
    d.seed = static_cast<uint64_t>(seed);
  }
  const bool text = f.Get("output") == "text";
  if (!text && f.Get("output") != "json") return absl::InvalidArgumentError("--output must be json or text");

  std::vector<std::string> lines;
  if (batch) {
    std::ifstream in(f.Get("prompts-file"));
    if (!in) return absl::NotFoundError(absl::StrCat(f.Get("prompts-file"), ": cannot open"));
    for (std::string line; std::getline(in, line);) {
      if (line.find_first_not_of(" \t\r") != std::string::npos) lines.push_back(line);
    }
  } else {
    ASSIGN_OR_RETURN(std::vector<int> ids, f.GetIntList("prompt-ids"));
    lines.push_back(Json{{"prompt_ids", ids}}.dump());
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, EngineFromFlags(f, mpi));
  if (mpi != nullptr) {
    ASSIGN_OR_RETURN(double timeout, f.GetDouble("rank-timeout"));
    // A failed rank fails the requests in flight; main exits non-zero.
    mpi->StartWatch(kHeartbeatSeconds, timeout, [](const absl::Status& why) {
      std::fprintf(stderr, "gqa-generate: the tensor-parallel job failed: %s\n", std::string(why.message()).c_str());
    });
  }
  // With the model's tokenizer, each result also carries its decoded "text".
  std::function<std::optional<std::string>(const std::vector<int32_t>&)> decode = [](const auto&) {
    return std::optional<std::string>();
  };
#ifdef GQA_HAVE_TOKENIZER
  std::unique_ptr<Tokenizer> tokenizer;
  if (std::filesystem::exists(std::filesystem::path(f.Get("model")) / "tokenizer.json")) {
    ASSIGN_OR_RETURN(tokenizer, Tokenizer::Load(f.Get("model")));
    decode = [&tokenizer](const std::vector<int32_t>& ids) -> std::optional<std::string> {
      absl::StatusOr<std::string> text = tokenizer->Decode(ids, /*skip_special_tokens=*/true);
      return text.ok() ? std::optional<std::string>(*text) : std::nullopt;
    };
  }
#endif

  std::mutex mu;
  std::condition_variable cv;
  std::vector<Outcome> outcomes(lines.size());
  std::vector<std::vector<int32_t>> tokens(lines.size());
  std::vector<Json> logprobs(lines.size(), Json::array());
  int pending = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    absl::StatusOr<GenerationRequest> req = ParseRequest(lines[i], d);
    if (req.ok()) {
      const bool want_logprobs = req->sampling.logprobs > 0;
      std::lock_guard<std::mutex> lock(mu);
      absl::StatusOr<int64_t> id = engine->Submit(*req, [&, i, want_logprobs](const RequestOutput& out) {
        std::lock_guard<std::mutex> lock(mu);
        for (const SampledToken& t : out.tokens) {
          tokens[i].push_back(t.token);
          if (want_logprobs) {
            Json top = Json::array();
            for (const auto& [tok, lp] : t.top_logprobs) top.push_back({{"token_id", tok}, {"logprob", lp}});
            logprobs[i].push_back({{"token_id", t.token}, {"logprob", t.logprob}, {"top_logprobs", top}});
          }
        }
        if (!out.finished) return;
        Json line;
        if (out.reason == FinishReason::kError) {
          line["error"] = std::string(out.error.message());
        } else {
          line["token_ids"] = tokens[i];
          if (std::optional<std::string> text = decode(tokens[i])) line["text"] = *text;
          line["finish_reason"] = FinishReasonName(out.reason);
          if (want_logprobs) line["logprobs"] = logprobs[i];
        }
        outcomes[i] = {line, true};
        --pending;
        cv.notify_all();
      });
      if (id.ok()) {
        ++pending;
        continue;
      }
      req = id.status();
    }
    outcomes[i] = {Json{{"error", std::string(req.status().message())}}, true};
  }
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return pending == 0; });
  for (size_t i = 0; i < outcomes.size(); ++i) {
    const Json& line = outcomes[i].line;
    if (text && line.contains("token_ids")) {
      std::string s;
      for (int t : line["token_ids"]) absl::StrAppend(&s, s.empty() ? "" : " ", t);
      std::printf("%s\n", s.c_str());
    } else {
      std::printf("%s\n", line.dump(-1, ' ', false, Json::error_handler_t::replace).c_str());
    }
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace gqa

int main(int argc, char** argv) {
  // Under mpirun: rank 0 generates and prints, the other ranks run their
  // shard of each step.
  absl::StatusOr<std::unique_ptr<gqa::MpiJob>> mpi = gqa::MpiJob::InitIfLaunched(&argc, &argv);
  if (!mpi.ok()) {
    std::fprintf(stderr, "gqa-generate: %s\n", std::string(mpi.status().message()).c_str());
    return 1;
  }
  gqa::Flags f("gqa-generate",
               "Generates tokens with a Hugging Face model directory on the CPU, through the serving engine:\n"
               "one prompt (--prompt-ids) or a JSONL file of requests (--prompts-file), each line\n"
               "{\"prompt_ids\":[...], \"max_new_tokens\":N, plus any of temperature, top_k, top_p, min_p, seed,\n"
               "presence_penalty, frequency_penalty, repetition_penalty, stop_token_ids, ignore_eos, logprobs}.\n"
               "Prints one JSON line per request in input order: {\"token_ids\":[...],\"finish_reason\":...}\n"
               "or {\"error\":\"...\"}.");
  gqa::AddEngineFlags(f);
  f.Add("prompt-ids", "", "comma-separated prompt token ids, e.g. 1,2,3");
  f.Add("prompts-file", "", "JSONL file of requests, run together");
  f.Add("max-new-tokens", "16", "tokens to generate (default for every request)");
  f.Add("temperature", "0", "0 for greedy decoding (default for every request)");
  f.AddBool("ignore-eos", "keep generating after an end-of-sequence token (default for every request)");
  f.Add("output", "json", "json: one object per line; text: token ids separated by spaces");
  gqa::ParseFlagsOrExit(f, argc, argv);
  if (*mpi != nullptr && (*mpi)->rank() != 0) {
    const int rc = gqa::ServeMpiRankFromFlags(f, mpi->get());
    mpi->reset();
    return rc;
  }
  absl::Status st = gqa::Run(f, mpi->get());
  if (!st.ok() || (*mpi != nullptr && !(*mpi)->failure().ok())) {
    if (!st.ok()) std::fprintf(stderr, "gqa-generate: %s\n", std::string(st.message()).c_str());
    std::fflush(stdout);
    std::fflush(stderr);
    if (*mpi != nullptr) std::_Exit(1);  // the job is not finalised after a failure
    return 1;
  }
  mpi->reset();
  return 0;
}
