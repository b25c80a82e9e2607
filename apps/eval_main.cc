// gqa-eval: perplexity of a model on a text (or token-id) file through the
// engine, with sliding windows (see engine/perplexity.h).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "base/flags.h"
#include "engine/perplexity.h"
#include "worker/device_group.h"
#ifdef GQA_HAVE_TOKENIZER
#include "tokenizer/tokenizer.h"
#endif

namespace gqa {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Integers separated by whitespace and/or commas.
absl::StatusOr<std::vector<int>> ParseTokenIds(const std::string& text, const std::string& path) {
  std::vector<int> ids;
  for (absl::string_view piece : absl::StrSplit(text, absl::ByAnyChar(" \t\r\n,"), absl::SkipEmpty())) {
    int v;
    if (!absl::SimpleAtoi(piece, &v)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": '", piece, "' is not a token id"));
    }
    ids.push_back(v);
  }
  return ids;
}

absl::StatusOr<std::vector<int>> ReadTokens(const Flags& f) {
  if (f.Has("token-ids") == f.Has("perplexity")) {
    return absl::InvalidArgumentError("give one of --perplexity FILE (text) or --token-ids FILE");
  }
  if (f.Has("token-ids")) {
    ASSIGN_OR_RETURN(std::string text, ReadFile(f.Get("token-ids")));
    return ParseTokenIds(text, f.Get("token-ids"));
  }
  ASSIGN_OR_RETURN(std::string text, ReadFile(f.Get("perplexity")));
#ifdef GQA_HAVE_TOKENIZER
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, Tokenizer::Load(f.Get("model")));
  EncodeOptions eo;
  eo.add_special_tokens = !f.GetBool("no-special-tokens");  // BOS as transformers' tokenizer(text) adds it
  ASSIGN_OR_RETURN(std::vector<TokenId> ids, tokenizer->Encode(text, eo));
  return std::vector<int>(ids.begin(), ids.end());
#else
  return absl::UnimplementedError("this build has no tokenizer; use --token-ids");
#endif
}

absl::Status Run(const Flags& f) {
  if (!f.Has("model")) return absl::InvalidArgumentError("--model DIR is required");
  ASSIGN_OR_RETURN(std::vector<int> ids, ReadTokens(f));
  ASSIGN_OR_RETURN(ModelConfig config,
                   LoadModelConfig((std::filesystem::path(f.Get("model")) / "config.json").string()));
  ASSIGN_OR_RETURN(int64_t context, f.GetInt("context"));
  ASSIGN_OR_RETURN(int64_t stride, f.GetInt("stride"));
  ASSIGN_OR_RETURN(int64_t chunk, f.GetInt("chunk"));
  ASSIGN_OR_RETURN(int64_t tp, f.GetInt("tp"));
  ASSIGN_OR_RETURN(int64_t threads, f.GetInt("threads"));
  if (context == 0) context = std::min(config.max_position_embeddings, 2048);
  if (context < 2 || context > config.max_position_embeddings) {
    return absl::InvalidArgumentError(
        absl::StrCat("--context must be in 2..", config.max_position_embeddings, " (max_position_embeddings)"));
  }
  if (stride == 0) stride = std::max<int64_t>(1, context / 2);
  if (stride < 1 || stride > context) return absl::InvalidArgumentError("--stride must be in 1..--context");
  if (chunk < 1) return absl::InvalidArgumentError("--chunk must be positive");
  chunk = std::min(chunk, context);
  if (tp < 1 || tp > 64) return absl::InvalidArgumentError("--tp must be in 1..64");
  ExecutorOptions eo;
  ASSIGN_OR_RETURN(eo.device, ParseDeviceKind(f.Get("device")));
  eo.tp = static_cast<int>(tp);
  eo.threads_per_rank = static_cast<int>(threads);
  eo.block_size = 16;
  eo.num_kv_blocks = static_cast<int>((context + eo.block_size - 1) / eo.block_size);
  eo.max_step_tokens = static_cast<int>(chunk);
  eo.max_step_seqs = static_cast<int>(chunk);  // the logits rows of a step
  ASSIGN_OR_RETURN(std::unique_ptr<Executor> executor, Executor::Open(f.Get("model"), eo));
  ASSIGN_OR_RETURN(PerplexityResult r, ComputePerplexity(*executor, ids, static_cast<int>(context),
                                                         static_cast<int>(stride), static_cast<int>(chunk)));
  nlohmann::json out = {{"perplexity", r.Perplexity()}, {"mean_nll", r.MeanNll()}, {"tokens", r.tokens},
                        {"input_tokens", ids.size()},   {"windows", r.windows},    {"context", context},
                        {"stride", stride},             {"tp", tp}};
  std::printf("%s\n", out.dump().c_str());
  return absl::OkStatus();
}

}  // namespace
}  // namespace gqa

int main(int argc, char** argv) {
  gqa::Flags f("gqa-eval", "Perplexity of a model on a file through the engine, with sliding windows of --context "
               "tokens every --stride tokens (each token scored once). Prints one JSON line.");
  f.Add("model", "", "model directory (config.json + safetensors; tokenizer.json for --perplexity)");
  f.Add("perplexity", "", "text file, tokenized with the model's tokenizer");
  f.Add("token-ids", "", "file of token ids (whitespace or comma separated), instead of --perplexity");
  f.AddBool("no-special-tokens", "do not add the tokenizer's special tokens (BOS) to the text");
  f.Add("context", "0", "window length in tokens; 0 means min(max_position_embeddings, 2048)");
  f.Add("stride", "0", "tokens between window starts; 0 means context / 2");
  f.Add("chunk", "256", "tokens per prefill step");
  f.Add("device", "cpu", "cpu, cuda or cuda-sim");
  f.Add("tp", "1", "tensor-parallel degree");
  f.Add("threads", "0", "CPU threads per rank; 0 means hardware threads / tp");
  gqa::ParseFlagsOrExit(f, argc, argv);
  absl::Status st = gqa::Run(f);
  if (!st.ok()) {
    std::fprintf(stderr, "gqa-eval: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
