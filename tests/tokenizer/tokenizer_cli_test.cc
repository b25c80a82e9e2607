// End-to-end checks of build/bin/gqa-tokenize against the committed HF
// fixtures: --input-jsonl encode, --decode, --chat, and error exit codes.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "tests/tokenizer/test_util.h"

namespace gqa {
namespace {

using testing::FixturePath;
using testing::ReadJsonl;

struct RunResult {
  int exit_code;
  std::vector<std::string> lines;
};

RunResult RunCli(const std::string& args, const std::string& stdin_text = "") {
  // One file per process: ctest runs these tests in parallel.
  const std::string in_path = absl::StrCat(::testing::TempDir(), "/gqa_tokenize_cli_in.", getpid(), ".jsonl");
  std::ofstream(in_path) << stdin_text;
  const std::string cmd = std::string(GQA_TOKENIZE_BIN) + " " + args + " < " + in_path + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  EXPECT_NE(p, nullptr);
  RunResult r;
  std::string cur;
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) cur.append(buf, n);
  const int status = pclose(p);
  std::remove(in_path.c_str());
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  size_t b = 0;
  for (size_t e = cur.find('\n'); e != std::string::npos; b = e + 1, e = cur.find('\n', b)) r.lines.push_back(cur.substr(b, e - b));
  return r;
}

TEST(CliTest, EncodesCorpusLikeHuggingFace) {
  for (const char* name : {"llama3", "qwen3", "mistral"}) {
    const auto expected = ReadJsonl(FixturePath(std::string(name) + ".jsonl"));
    RunResult r = RunCli(absl::StrCat("--tokenizer ", testing::TokenizerDir(name), " --input-jsonl ",
                                   FixturePath("corpus.jsonl")));
    ASSERT_EQ(r.exit_code, 0) << name;
    ASSERT_EQ(r.lines.size(), expected.size()) << name;
    for (size_t i = 0; i < expected.size(); ++i) {
      ASSERT_EQ(nlohmann::json::parse(r.lines[i])["ids"], expected[i]["ids"]) << name << " line " << i;
    }
    RunResult s = RunCli(absl::StrCat("--tokenizer ", testing::TokenizerDir(name), " --add-special-tokens --input-jsonl ",
                                   FixturePath("corpus.jsonl")));
    ASSERT_EQ(s.lines.size(), expected.size());
    for (size_t i = 0; i < expected.size(); ++i) {
      ASSERT_EQ(nlohmann::json::parse(s.lines[i])["ids"], expected[i]["ids_add_special"]) << name << " line " << i;
    }
  }
}

TEST(CliTest, DecodesLikeHuggingFace) {
  const auto cases = ReadJsonl(FixturePath("qwen3.decode.jsonl"));
  std::string input;
  for (const auto& c : cases) input += nlohmann::json({{"ids", c["ids"]}}).dump() + "\n";
  RunResult r = RunCli(absl::StrCat("--tokenizer ", testing::TokenizerDir("qwen3"), " --decode"), input);
  ASSERT_EQ(r.exit_code, 0);
  ASSERT_EQ(r.lines.size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i)
    EXPECT_EQ(nlohmann::json::parse(r.lines[i])["text"], cases[i]["decoded"]) << "case " << i;
}

TEST(CliTest, RendersChatLikeTransformers) {
  std::vector<nlohmann::ordered_json> expected;
  std::string input;
  for (const auto& rec : ReadJsonl(FixturePath("chat.jsonl"))) {
    if (rec["template"] != "qwen3" || !rec["add_generation_prompt"].get<bool>() || rec.contains("error")) continue;
    nlohmann::ordered_json in = {{"messages", rec["messages"]}};
    if (rec.contains("tools")) in["tools"] = rec["tools"];
    if (rec.contains("enable_thinking")) in["enable_thinking"] = rec["enable_thinking"];
    input += in.dump() + "\n";
    expected.push_back(rec);
  }
  ASSERT_GE(expected.size(), 5u);
  RunResult r = RunCli(absl::StrCat("--tokenizer ", testing::TokenizerDir("qwen3"), " --chat"), input);
  ASSERT_EQ(r.exit_code, 0);
  ASSERT_EQ(r.lines.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i)
    EXPECT_EQ(nlohmann::json::parse(r.lines[i])["text"], expected[i]["text"]) << "conversation " << i;
}

TEST(CliTest, ErrorsExitNonZero) {
  EXPECT_EQ(RunCli("--no-such-flag").exit_code, 2);
  EXPECT_EQ(RunCli("--tokenizer /nonexistent/dir").exit_code, 1);
  // A bad line is reported and skipped; the good lines are still printed.
  RunResult r = RunCli(absl::StrCat("--tokenizer ", testing::TokenizerDir("llama3")),
                    "{\"text\": \"ok\"}\nnot json\n{\"ids\": [1]}\n{\"text\": \"fine\"}\n");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.lines.size(), 2u);
  // The mistral config has no chat template.
  EXPECT_EQ(RunCli(absl::StrCat("--tokenizer ", testing::TokenizerDir("mistral"), " --chat"),
                "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n").exit_code, 1);
  // Unknown ids are an error.
  EXPECT_EQ(RunCli(absl::StrCat("--tokenizer ", testing::TokenizerDir("mistral"), " --decode"),
                "{\"ids\": [1, 99999999]}\n").exit_code, 1);
}

}  // namespace
}  // namespace gqa
