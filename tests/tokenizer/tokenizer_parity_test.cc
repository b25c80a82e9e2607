// Parity with Hugging Face tokenizers on the committed corpus: ids (three
// encode modes), decodes, and streaming detokenization token by token.
// Fixtures: tests/reference/make_tokenizer_fixtures.py (run by hand).
#include <algorithm>
#include <map>

#include "tokenizer/detokenizer.h"
#include "tokenizer/unicode.h"
#include "tests/tokenizer/test_util.h"

namespace gqa {
namespace {

using testing::FixturePath;
using testing::LoadShared;
using testing::ReadJsonl;

std::vector<TokenId> Ids(const nlohmann::ordered_json& j) { return j.get<std::vector<TokenId>>(); }

class ParityTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    corpus_ = ReadJsonl(FixturePath("corpus.jsonl"));
    expected_ = ReadJsonl(FixturePath(GetParam() + ".jsonl"));
    ASSERT_GE(corpus_.size(), 300u);
    ASSERT_EQ(corpus_.size(), expected_.size());
  }
  std::vector<nlohmann::ordered_json> corpus_, expected_;
};

constexpr int kMaxReports = 8;

TEST_P(ParityTest, EncodeMatchesHuggingFace) {
  const Tokenizer& tok = LoadShared(GetParam());
  int bad = 0;
  for (size_t i = 0; i < corpus_.size(); ++i) {
    const std::string text = corpus_[i]["text"];
    struct Mode {
      const char* key;
      EncodeOptions opts;
    } modes[] = {{"ids", {false, true}}, {"ids_add_special", {true, true}}, {"ids_special_as_text", {false, false}}};
    for (const Mode& m : modes) {
      auto ids = tok.Encode(text, m.opts);
      ASSERT_TRUE(ids.ok()) << ids.status();
      if (*ids != Ids(expected_[i][m.key]) && ++bad <= kMaxReports) {
        ADD_FAILURE() << GetParam() << " text #" << i << " (" << m.key << ") " << nlohmann::json(text).dump()
                      << "\n  got      " << nlohmann::json(*ids).dump()
                      << "\n  expected " << expected_[i][m.key].dump();
      }
    }
  }
  EXPECT_EQ(bad, 0) << "mismatching encodings";
}

TEST_P(ParityTest, DecodeMatchesHuggingFace) {
  const Tokenizer& tok = LoadShared(GetParam());
  int bad = 0;
  for (size_t i = 0; i < expected_.size(); ++i) {
    const auto& e = expected_[i];
    struct Case {
      const char* ids;
      const char* text;
      bool skip;
    } cases[] = {{"ids", "decoded", false},
                 {"ids_add_special", "decoded_skip_special", true},
                 {"ids_special_as_text", "decoded_special_as_text", false}};
    for (const Case& c : cases) {
      auto text = tok.Decode(Ids(e[c.ids]), c.skip);
      ASSERT_TRUE(text.ok()) << text.status();
      if (*text != e[c.text].get<std::string>() && ++bad <= kMaxReports) {
        ADD_FAILURE() << GetParam() << " #" << i << " (" << c.text << ")\n  got      "
                      << nlohmann::json(*text).dump() << "\n  expected " << e[c.text].dump();
      }
    }
  }
  EXPECT_EQ(bad, 0) << "mismatching decodes";
}

// Deltas, one token at a time, concatenate to HF's full decode, and each
// delta is valid UTF-8 on its own (no partial characters).
TEST_P(ParityTest, StreamingDeltasConcatenateToFullDecode) {
  const Tokenizer& tok = LoadShared(GetParam());
  int bad = 0;
  size_t tokens = 0;
  for (size_t i = 0; i < expected_.size(); ++i) {
    for (bool skip : {false, true}) {
      const auto& e = expected_[i];
      const std::vector<TokenId> ids = Ids(e[skip ? "ids_add_special" : "ids"]);
      const std::string want = e[skip ? "decoded_skip_special" : "decoded"];
      StreamDetokenizer stream(tok, skip);
      std::string got;
      for (TokenId id : ids) {
        auto delta = stream.Push(id);
        ASSERT_TRUE(delta.ok()) << delta.status();
        ASSERT_TRUE(ValidateUtf8(*delta, "delta").ok()) << "partial UTF-8 in a delta, text #" << i;
        got += *delta;
        ++tokens;
      }
      got += stream.Finish();
      if (got != want && ++bad <= kMaxReports) {
        ADD_FAILURE() << GetParam() << " #" << i << " stream\n  got      " << nlohmann::json(got).dump()
                      << "\n  expected " << nlohmann::json(want).dump();
      }
    }
  }
  EXPECT_GT(tokens, 10000u);
  EXPECT_EQ(bad, 0) << "streams differing from the full decode";
}

// Arbitrary id sequences (invalid UTF-8 byte tokens, specials, cut
// characters): full decode and token-by-token streaming both equal HF.
TEST_P(ParityTest, ArbitraryIdSequencesDecodeAndStreamLikeHuggingFace) {
  const Tokenizer& tok = LoadShared(GetParam());
  const auto cases = ReadJsonl(FixturePath(GetParam() + ".decode.jsonl"));
  ASSERT_GE(cases.size(), 100u);
  int bad = 0, with_replacement = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::vector<TokenId> ids = Ids(cases[i]["ids"]);
    for (bool skip : {false, true}) {
      const std::string want = cases[i][skip ? "decoded_skip_special" : "decoded"];
      with_replacement += want.find("\xEF\xBF\xBD") != std::string::npos;
      auto full = tok.Decode(ids, skip);
      ASSERT_TRUE(full.ok()) << full.status();
      StreamDetokenizer stream(tok, skip);
      std::string streamed;
      for (TokenId id : ids) {
        auto delta = stream.Push(id);
        ASSERT_TRUE(delta.ok()) << delta.status();
        ASSERT_TRUE(ValidateUtf8(*delta, "delta").ok());
        streamed += *delta;
      }
      streamed += stream.Finish();
      if ((*full != want || streamed != want) && ++bad <= kMaxReports) {
        ADD_FAILURE() << GetParam() << " case #" << i << " skip=" << skip << "\n  ids      "
                      << cases[i]["ids"].dump() << "\n  decode   " << nlohmann::json(*full).dump()
                      << "\n  streamed " << nlohmann::json(streamed).dump() << "\n  expected "
                      << nlohmann::json(want).dump();
      }
    }
  }
  EXPECT_GT(with_replacement, 50) << "fixtures should exercise invalid UTF-8";
  EXPECT_EQ(bad, 0);
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, ParityTest,
                         ::testing::Values("llama3", "qwen3", "mistral", "mistral-metaspace-first",
                                           "mistral-metaspace-split", "qwen3-added-token-flags",
                                           "mistral-strip"),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

}  // namespace
}  // namespace gqa
