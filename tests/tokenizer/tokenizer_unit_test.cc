// Unit tests: stop strings over real token streams, UTF-8 helpers, special
// tokens as text, and clear errors for unsupported tokenizer components.
#include <thread>

#include "tokenizer/detokenizer.h"
#include "tokenizer/stop_strings.h"
#include "tokenizer/unicode.h"
#include "tests/tokenizer/test_util.h"

namespace gqa {
namespace {

using testing::LoadShared;

// Streams `text` token by token through the detokenizer and the matcher and
// returns what a client would receive.
struct StreamResult {
  std::string sent;
  bool stopped = false;
  size_t tokens_consumed = 0;
};
StreamResult StreamWithStops(const Tokenizer& tok, const std::string& text, std::vector<std::string> stops) {
  auto ids = tok.Encode(text, {});
  EXPECT_TRUE(ids.ok());
  StreamDetokenizer detok(tok, false);
  StopStringMatcher stop(std::move(stops));
  StreamResult r;
  for (TokenId id : *ids) {
    ++r.tokens_consumed;
    auto delta = detok.Push(id);
    EXPECT_TRUE(delta.ok());
    auto out = stop.Push(*delta);
    r.sent += out.text;
    if (out.stopped) {
      r.stopped = true;
      return r;
    }
  }
  auto out = stop.Push(detok.Finish());
  r.sent += out.text;
  r.stopped = out.stopped;
  if (!r.stopped) r.sent += stop.Finish();
  return r;
}

TEST(StopStringsTest, StopSpanningTokensIsCaughtAndNotReturned) {
  for (const char* name : {"llama3", "qwen3", "mistral"}) {
    const Tokenizer& tok = LoadShared(name);
    const std::string text = "The answer is 42.\nObservation: the sky is blue. More text follows.";
    for (std::string stop : {"Observation:", "\nObs", "sky is", "s 4", "."}) {
      // The expected output is computed independently from the full decode.
      const std::string full = *tok.Decode(*tok.Encode(text, {}));
      const size_t pos = full.find(stop);
      ASSERT_NE(pos, std::string::npos);
      auto r = StreamWithStops(tok, text, {stop, "never appears"});
      EXPECT_TRUE(r.stopped) << name << " stop=" << stop;
      EXPECT_EQ(r.sent, full.substr(0, pos)) << name << " stop=" << stop;
    }
    // No stop string present: everything is released at the end.
    auto r = StreamWithStops(tok, text, {"zzz", "blue!"});
    EXPECT_FALSE(r.stopped);
    EXPECT_EQ(r.sent, *tok.Decode(*tok.Encode(text, {})));
  }
}

TEST(StopStringsTest, HoldsOnlyPossiblePrefixes) {
  StopStringMatcher m({"</s>", "STOP"});
  EXPECT_EQ(m.Push("abc<").text, "abc");
  EXPECT_EQ(m.Push("/").text, "");
  auto r = m.Push("x>");  // not a stop after all
  EXPECT_EQ(r.text, "</x>");
  EXPECT_FALSE(r.stopped);
  r = m.Push("ST");
  EXPECT_EQ(r.text, "");
  r = m.Push("OP and more");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "");
  EXPECT_EQ(r.stop_index, 1);
  EXPECT_TRUE(m.Push("later").stopped);
}

TEST(StopStringsTest, EarliestStopWins) {
  StopStringMatcher m({"world", "lo w"});
  auto r = m.Push("hello world");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "hel");
  EXPECT_EQ(r.stop_index, 1);
}

TEST(Utf8Test, LossyMatchesMaximalSubpartPolicy) {
  // Examples from the Unicode standard's table 3-8 discussion.
  EXPECT_EQ(Utf8Lossy("a\xF1\x80\x80" "b"), "a\xEF\xBF\xBD" "b");       // truncated 4-byte: one U+FFFD
  EXPECT_EQ(Utf8Lossy("\xE0\x80\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong: three
  EXPECT_EQ(Utf8Lossy("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate: three
  EXPECT_EQ(Utf8Lossy("\xC3"), "\xEF\xBF\xBD");
  Utf8LossyStream s;
  EXPECT_EQ(s.Push("\xE2\x82"), "");  // held: may still complete
  EXPECT_EQ(s.Push("\xAC!"), "\xE2\x82\xAC!");
  EXPECT_EQ(s.Push("\xF0\x9F"), "");
  EXPECT_EQ(s.Finish(), "\xEF\xBF\xBD");
}

TEST(EncodeTest, InvalidUtf8IsAClearError) {
  const Tokenizer& tok = LoadShared("qwen3");
  auto ids = tok.Encode("ok \xC3\x28 bad", {});
  ASSERT_FALSE(ids.ok());
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(ids.status().message()).find("byte offset 3"), std::string::npos) << ids.status();
}

TEST(EncodeTest, SpecialTokenTextIsPlainTextByDefault) {
  const Tokenizer& tok = LoadShared("qwen3");
  const TokenId im_start = tok.TokenToId("<|im_start|>");
  ASSERT_GE(im_start, 0);
  auto safe = tok.Encode("<|im_start|>system", {});
  auto parsed = tok.Encode("<|im_start|>system", {.add_special_tokens = false, .parse_special_tokens = true});
  ASSERT_TRUE(safe.ok() && parsed.ok());
  EXPECT_EQ(parsed->front(), im_start);
  EXPECT_EQ(std::count(safe->begin(), safe->end(), im_start), 0);
  EXPECT_EQ(*tok.Decode(*safe), "<|im_start|>system");
}

TEST(EncodeTest, BosFromPostProcessor) {
  const Tokenizer& mistral = LoadShared("mistral");
  auto ids = mistral.Encode("Hi", {.add_special_tokens = true});
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(ids->front(), mistral.bos_id());
  EXPECT_EQ(mistral.bos_token(), "<s>");
  const Tokenizer& qwen = LoadShared("qwen3");
  EXPECT_EQ(qwen.eos_token(), "<|im_end|>");
  EXPECT_EQ(qwen.bos_id(), -1);
}

TEST(DecodeTest, UnknownIdIsAnError) {
  const Tokenizer& tok = LoadShared("llama3");
  EXPECT_FALSE(tok.Decode({1, 2, 99999999}).ok());
  StreamDetokenizer d(tok, false);
  EXPECT_FALSE(d.Push(-5).ok());
}

TEST(DecodeTest, StreamNeverSplitsCharacters) {
  // "€" is three byte-level tokens' worth of bytes in pieces; force byte tokens.
  const Tokenizer& tok = LoadShared("llama3");
  const ByteLevelMap& map = GetByteLevelMap();
  std::vector<TokenId> ids;
  for (unsigned char b : std::string("\xE2\x82\xAC")) ids.push_back(tok.TokenToId(map.byte_to_utf8[b]));
  StreamDetokenizer d(tok, false);
  EXPECT_EQ(*d.Push(ids[0]), "");
  EXPECT_EQ(*d.Push(ids[1]), "");
  EXPECT_EQ(*d.Push(ids[2]), "\xE2\x82\xAC");
  EXPECT_EQ(d.Finish(), "");
}

// One Tokenizer shared by several threads (as in the server) gives the same
// ids as one thread; exercises the shared word cache under contention.
TEST(EncodeTest, ConcurrentEncodesAgree) {
  const Tokenizer& tok = LoadShared("qwen3");
  const auto corpus = testing::ReadJsonl(testing::FixturePath("corpus.jsonl"));
  std::vector<std::vector<TokenId>> want;
  for (const auto& j : corpus) want.push_back(*tok.Encode(j["text"].get<std::string>(), {}));
  const_cast<Tokenizer&>(tok).ClearCache();
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round)
        for (size_t i = t; i < corpus.size() + t; ++i) {
          const size_t k = i % corpus.size();
          auto ids = tok.Encode(corpus[k]["text"].get<std::string>(), {});
          mismatches[t] += !ids.ok() || *ids != want[k];
        }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(mismatches[t], 0) << "thread " << t;
}

// Each unsupported component is rejected with its name in the message.
TEST(LoadTest, UnsupportedComponentsAreNamed) {
  const std::string base = testing::ReadText(testing::TokenizerDir("mistral") + "/tokenizer.json");
  struct Case {
    const char* key;
    const char* value;
    const char* needle;
  } cases[] = {
      {"normalizer", R"({"type": "NFKC"})", "normalizer type \"NFKC\""},
      {"pre_tokenizer", R"({"type": "BertPreTokenizer"})", "pre_tokenizer type \"BertPreTokenizer\""},
      {"decoder", R"({"type": "WordPiece"})", "decoder type \"WordPiece\""},
      {"post_processor", R"({"type": "BertProcessing"})", "post_processor type \"BertProcessing\""},
      {"truncation", R"({"max_length": 5})", "truncation"},
  };
  for (const Case& c : cases) {
    auto j = nlohmann::json::parse(base);
    j[c.key] = nlohmann::json::parse(c.value);
    auto tok = Tokenizer::FromJson(j.dump(), "");
    ASSERT_FALSE(tok.ok()) << c.key;
    EXPECT_NE(std::string(tok.status().message()).find(c.needle), std::string::npos) << tok.status();
  }
  auto j = nlohmann::json::parse(base);
  j["model"]["type"] = "Unigram";
  auto tok = Tokenizer::FromJson(j.dump(), "");
  ASSERT_FALSE(tok.ok());
  EXPECT_NE(std::string(tok.status().message()).find("model type \"Unigram\""), std::string::npos) << tok.status();
}

}  // namespace
}  // namespace gqa
