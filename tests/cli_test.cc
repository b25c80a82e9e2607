// The command-line contracts: gqa-generate's JSON lines (single prompt and
// batch file, in input order, errors per line) and gqa-make-model's output,
// checked against transformers' tokens.
#include <cstdio>
#include <fstream>
#include <memory>

#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace gqa {
namespace {

using Json = nlohmann::json;

struct ProgramRun {
  int status = -1;
  std::vector<std::string> lines;
};

ProgramRun Execute(const std::string& args) {
  const std::string cmd = std::string(GQA_BIN_DIR) + "/" + args + " 2>/dev/null";
  ProgramRun r;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return r;
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), pipe)) out.append(buf, n);
  r.status = pclose(pipe);
  for (size_t pos = 0; pos < out.size();) {
    const size_t nl = out.find('\n', pos);
    r.lines.push_back(out.substr(pos, nl - pos));
    pos = nl == std::string::npos ? out.size() : nl + 1;
  }
  return r;
}

Json Expected(const std::string& name) {
  std::ifstream in(testing::FixturePath("golden/" + name + "/expected.json"));
  return Json::parse(in);
}

std::string Ids(const Json& ids) {
  return absl::StrJoin(ids.get<std::vector<int>>(), ",");
}

TEST(CliTest, GenerateSinglePromptMatchesTransformers) {
  const Json e = Expected("qwen2_bias");
  for (int tp : {1, 2}) {
    const ProgramRun r = Execute("gqa-generate --model " + testing::FixturePath("golden/qwen2_bias") + " --tp " +
                          std::to_string(tp) + " --prompt-ids " + Ids(e["prompts"][1]) +
                          " --max-new-tokens 16 --temperature 0 --ignore-eos --output json");
    ASSERT_EQ(r.status, 0);
    ASSERT_EQ(r.lines.size(), 1u);
    const Json out = Json::parse(r.lines[0]);
    EXPECT_EQ(out["token_ids"], e["greedy_tokens"][1]) << "tp=" << tp;
    EXPECT_EQ(out["finish_reason"], "length");
  }
}

// The whole engine on the CUDA backend's kernels under the interpreter: the
// same greedy tokens as transformers at every TP degree, K < T included.
TEST(CliTest, GenerateOnCudaSimMatchesTransformers) {
  const Json e = Expected("llama_gqa");
  const std::string file = testing::TempDir("cli_cuda_sim") + "/requests.jsonl";
  {
    std::ofstream out(file);
    for (int p = 0; p < 3; ++p) {
      out << Json{{"prompt_ids", e["prompts"][p]}, {"max_new_tokens", 16}, {"ignore_eos", true}}.dump() << "\n";
    }
  }
  for (int tp : {1, 2, 4, 8}) {
    const ProgramRun r = Execute("gqa-generate --model " + testing::FixturePath("golden/llama_gqa") +
                                 " --device cuda-sim --tp " + std::to_string(tp) + " --prompts-file " + file +
                                 " --max-num-batched-tokens 16 --block-size 16 --num-kv-blocks 16");
    ASSERT_EQ(r.status, 0) << "tp=" << tp;
    ASSERT_EQ(r.lines.size(), 3u) << "tp=" << tp;
    for (int p = 0; p < 3; ++p) EXPECT_EQ(Json::parse(r.lines[p])["token_ids"], e["greedy_tokens"][p]) << "tp=" << tp;
  }
}

TEST(CliTest, CudaWithoutAGpuFailsAtStartWithAMessage) {
  const std::string cmd = std::string(GQA_BIN_DIR) + "/gqa-generate --model " + testing::FixturePath("golden/llama_gqa") +
                          " --device cuda --prompt-ids 1,2 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), pipe)) out.append(buf, n);
  const int status = pclose(pipe);
  if (status == 0) GTEST_SKIP() << "a CUDA device is present";
  EXPECT_NE(out.find("--device cuda"), std::string::npos) << out;
}

TEST(CliTest, GenerateBatchFileInInputOrder) {
  const Json e = Expected("llama_gqa");
  const std::string file = testing::TempDir("cli") + "/requests.jsonl";
  {
    std::ofstream out(file);
    for (int p = 2; p >= 0; --p) {
      out << Json{{"prompt_ids", e["prompts"][p]}, {"max_new_tokens", 16}, {"ignore_eos", true}}.dump() << "\n";
    }
    out << "{\"prompt_ids\": [1, 300]}\n";    // out of the 300-token vocabulary
    out << "{\"prompt_ids\": \"hello\"}\n";   // wrong type
    out << "{\"prompt_ids\": [1], \"temperature\": -1}\n";
    out << "{\"prompt_ids\": [1], \"max_new_tokens\": 100000}\n";
  }
  const ProgramRun r = Execute("gqa-generate --model " + testing::FixturePath("golden/llama_gqa") + " --tp 2 --prompts-file " +
                        file + " --max-num-seqs 2 --max-num-batched-tokens 5 --block-size 4 --num-kv-blocks 20");
  ASSERT_EQ(r.status, 0);
  ASSERT_EQ(r.lines.size(), 7u);
  for (int i = 0; i < 3; ++i) {
    const Json out = Json::parse(r.lines[i]);
    EXPECT_EQ(out["token_ids"], e["greedy_tokens"][2 - i]) << "line " << i;
  }
  for (int i = 3; i < 7; ++i) {
    const Json out = Json::parse(r.lines[i]);
    EXPECT_TRUE(out.contains("error")) << r.lines[i];
  }
  EXPECT_NE(r.lines[3].find("vocabulary"), std::string::npos);
  EXPECT_NE(r.lines[4].find("prompt_ids"), std::string::npos);
  EXPECT_NE(r.lines[5].find("temperature"), std::string::npos);
  EXPECT_NE(r.lines[6].find("maximum model length"), std::string::npos);
}

TEST(CliTest, MakeModelIsDeterministicAndLoads) {
  const std::string a = testing::TempDir("a"), b = testing::TempDir("b");
  const std::string args = " --layers 2 --hidden 32 --heads 4 --kv-heads 1 --vocab 50 --dtype bf16 --seed 3 --shards 2";
  ASSERT_EQ(Execute("gqa-make-model --out " + a + args).status, 0);
  ASSERT_EQ(Execute("gqa-make-model --out " + b + args).status, 0);
  for (const char* f : {"config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                        "model.safetensors.index.json"}) {
    std::ifstream fa(a + "/" + f, std::ios::binary), fb(b + "/" + f, std::ios::binary);
    ASSERT_TRUE(fa && fb) << f;
    EXPECT_TRUE(std::equal(std::istreambuf_iterator<char>(fa), {}, std::istreambuf_iterator<char>(fb))) << f;
  }
  const ProgramRun r = Execute("gqa-generate --model " + a + " --prompt-ids 1,2 --max-new-tokens 4 --ignore-eos");
  ASSERT_EQ(r.status, 0);
  EXPECT_EQ(Json::parse(r.lines[0])["token_ids"].size(), 4u);
}

// Both CPU activation modes through the program (they differ only on
// AVX-512 BF16): transformers' greedy tokens for the bf16 checkpoint.
TEST(CliTest, CpuActivationModesKeepTransformersTokens) {
  const Json e = Expected("llama_bf16");
  for (const char* mode : {"auto", "bf16", "f32"}) {
    const ProgramRun r = Execute("gqa-generate --model " + testing::FixturePath("golden/llama_bf16") +
                                 " --cpu-activations " + mode + " --prompt-ids " + Ids(e["prompts"][2]) +
                                 " --max-new-tokens 16 --temperature 0 --ignore-eos --output json");
    ASSERT_EQ(r.status, 0) << mode;
    ASSERT_EQ(r.lines.size(), 1u);
    EXPECT_EQ(Json::parse(r.lines[0])["token_ids"], e["greedy_tokens"][2]) << mode;
  }
}

TEST(CliTest, BadInvocationsExitNonZeroWithAMessage) {
  EXPECT_NE(Execute("gqa-generate --model /nonexistent --prompt-ids 1").status, 0);
  EXPECT_NE(Execute("gqa-generate --model " + testing::FixturePath("golden/llama_gqa") + " --prompt-ids 1 --tp 9").status, 0);
  EXPECT_NE(Execute("gqa-generate --bogus-flag").status, 0);
  EXPECT_NE(Execute("gqa-generate --model " + testing::FixturePath("golden/llama_bf16") +
                    " --prompt-ids 1 --cpu-activations fp8").status, 0);
  EXPECT_NE(Execute("gqa-plan --config " + testing::FixturePath("configs/llama3_8b.json") + " --tp 33").status, 0);
}

}  // namespace
}  // namespace gqa
