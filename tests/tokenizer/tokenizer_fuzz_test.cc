// Bounded fuzzing that runs in CI: a seeded RNG and a fixed number of
// iterations (seed printed; override with GQA_FUZZ_SEED). Malformed
// tokenizer.json must give an error or a working tokenizer, never a crash;
// random bytes must be rejected exactly when they are not valid UTF-8; random
// id streams must detokenize to the full decode; mutated chat templates must
// compile or fail cleanly.
#include <cstdlib>
#include <random>

#include "tokenizer/chat_template.h"
#include "tokenizer/detokenizer.h"
#include "tokenizer/unicode.h"
#include "tests/tokenizer/test_util.h"

namespace gqa {
namespace {

using testing::LoadShared;

uint64_t Seed() {
  static const uint64_t seed = [] {
    const char* env = std::getenv("GQA_FUZZ_SEED");
    uint64_t s = env ? std::strtoull(env, nullptr, 10) : 20261123;
    std::printf("fuzz seed %llu (set GQA_FUZZ_SEED to change)\n", static_cast<unsigned long long>(s));
    return s;
  }();
  return seed;
}

// A small but complete byte-level BPE tokenizer.json (all 256 byte symbols,
// a few merges, a Split regex, NFC, added tokens) to mutate.
nlohmann::json SmallTokenizer() {
  const ByteLevelMap& map = GetByteLevelMap();
  nlohmann::json vocab = nlohmann::json::object();
  int id = 0;
  for (int b = 0; b < 256; ++b) vocab[map.byte_to_utf8[b]] = id++;
  const std::string sp = map.byte_to_utf8[' '];
  for (const char* t : {"th", "the", "in", "er"}) vocab[t] = id++;
  vocab[sp + "t"] = id++;
  vocab[sp + "the"] = id++;
  nlohmann::json merges = nlohmann::json::array({{"t", "h"}, {"th", "e"}, {"i", "n"}, {"e", "r"}, {sp, "t"}});
  merges.push_back(sp + " the");  // legacy string form
  return {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", {{{"id", id}, {"content", "<|end|>"}, {"special", true}, {"normalized", false}},
                        {{"id", id + 1}, {"content", "<x>"}, {"special", false}, {"normalized", true}}}},
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", R"( ?\p{L}+|\p{N}{1,3}|\s+(?!\S)|\s+|[^\s\p{L}\p{N}]+)"}}},
           {"behavior", "Isolated"}, {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
      {"post_processor", {{"type", "ByteLevel"}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}, {"ignore_merges", false}}}};
}

nlohmann::json RandomJson(std::mt19937_64& rng) {
  switch (rng() % 8) {
    case 0: return nullptr;
    case 1: return static_cast<int64_t>(rng() % 2000) - 1000;
    case 2: return "Regex";
    case 3: return nlohmann::json::array({"a", 1});
    case 4: return nlohmann::json::object({{"type", "Split"}});
    case 5: return true;
    case 6: return 3.5;
    default: return std::string(1 + rng() % 4, 'x');
  }
}

// Replaces, deletes or retypes a random node of the tree.
void MutateTree(nlohmann::json& j, std::mt19937_64& rng, int depth = 0) {
  if ((j.is_object() || j.is_array()) && !j.empty() && depth < 6 && rng() % 4 != 0) {
    auto it = j.begin();
    std::advance(it, rng() % j.size());
    if (rng() % 8 == 0) {
      if (j.is_object()) j.erase(it.key());
      else j.erase(j.begin() + (rng() % j.size()));
      return;
    }
    MutateTree(*it, rng, depth + 1);
    return;
  }
  j = RandomJson(rng);
}

std::string RandomText(std::mt19937_64& rng, size_t max_len) {
  static const char* kPieces[] = {"the", " ", "  ", "\n", "é", "e\xCC\x81", "中", "🙂", "<|end|>", "<x>", "12345", "!?", "\t"};
  std::string s;
  const size_t n = rng() % max_len;
  for (size_t k = 0; k < n; ++k) s += kPieces[rng() % (sizeof(kPieces) / sizeof(kPieces[0]))];
  return s;
}

TEST(FuzzTest, MalformedTokenizerJsonNeverCrashes) {
  std::mt19937_64 rng(Seed());
  const nlohmann::json base = SmallTokenizer();
  const std::string base_text = base.dump();
  {
    auto tok = Tokenizer::FromJson(base_text, "");
    ASSERT_TRUE(tok.ok()) << tok.status();  // the unmutated file is valid
    auto ids = (*tok)->Encode(" the thing <|end|>", {.parse_special_tokens = true});
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(*(*tok)->Decode(*ids), " the thing <|end|>");
  }
  int loaded = 0, rejected = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string text;
    if (iter % 2 == 0) {
      nlohmann::json j = base;
      for (int m = 0, n = 1 + rng() % 3; m < n; ++m) MutateTree(j, rng);
      text = j.dump();
    } else {
      text = base_text;
      for (int m = 0, n = 1 + rng() % 4; m < n; ++m) {
        const size_t pos = rng() % (text.size() + 1);
        switch (rng() % 4) {
          case 0: if (pos < text.size()) text[pos] = static_cast<char>(rng()); break;
          case 1: text.insert(pos, 1, "{}[]\",:\\0"[rng() % 10]); break;
          case 2: text.erase(pos, rng() % 16); break;
          default: text.resize(pos); break;
        }
      }
    }
    auto tok = Tokenizer::FromJson(text, "");
    if (!tok.ok()) {
      ++rejected;
      EXPECT_FALSE(tok.status().message().empty());
      continue;
    }
    ++loaded;
    const std::string input = RandomText(rng, 12);
    auto ids = (*tok)->Encode(input, {.parse_special_tokens = (rng() & 1) != 0});
    ASSERT_TRUE(ids.ok()) << ids.status();
    auto back = (*tok)->Decode(*ids);
    if (back.ok()) {
      EXPECT_TRUE(ValidateUtf8(*back, "decode").ok());
    }
  }
  std::printf("mutated tokenizers: %d loaded, %d rejected\n", loaded, rejected);
  EXPECT_GT(rejected, 100);
  EXPECT_GT(loaded, 10);
}

TEST(FuzzTest, RandomBytesRejectedExactlyWhenInvalidUtf8) {
  std::mt19937_64 rng(Seed() + 1);
  const Tokenizer& tok = LoadShared("llama3");  // no normalizer: decode(encode(x)) == x
  int valid = 0, invalid = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    std::string s;
    const size_t n = rng() % 24;
    for (size_t k = 0; k < n; ++k) {
      switch (rng() % 5) {  // biased towards UTF-8 structure
        case 0: s += static_cast<char>(0x20 + rng() % 0x5f); break;
        case 1: s += static_cast<char>(0x80 + rng() % 0x40); break;
        case 2: s += static_cast<char>(0xC0 + rng() % 0x40); break;
        case 3: s += "é中🙂"[rng() % 9]; break;
        default: s += static_cast<char>(rng()); break;
      }
    }
    // Independent check with ICU-free reference: round-trip through UTF-32.
    bool ref_valid = true;
    for (size_t i = 0; i < s.size();) {
      const unsigned char c = s[i];
      int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
      if (len == 0 || i + len > s.size()) { ref_valid = false; break; }
      uint32_t cp = len == 1 ? c : c & (0xFF >> (len + 1));
      for (int k = 1; k < len; ++k) {
        const unsigned char d = s[i + k];
        if ((d & 0xC0) != 0x80) { ref_valid = false; break; }
        cp = (cp << 6) | (d & 0x3F);
      }
      if (!ref_valid) break;
      const uint32_t min_cp[] = {0, 0, 0x80, 0x800, 0x10000};
      if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) { ref_valid = false; break; }
      i += len;
    }
    auto ids = tok.Encode(s, {});
    ASSERT_EQ(ids.ok(), ref_valid) << nlohmann::json::binary_t(std::vector<uint8_t>(s.begin(), s.end())).size();
    if (ids.ok()) {
      ++valid;
      EXPECT_EQ(*tok.Decode(*ids), s);
    } else {
      ++invalid;
      EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
    }
    EXPECT_TRUE(ValidateUtf8(Utf8Lossy(s), "lossy").ok());
  }
  EXPECT_GT(valid, 200);
  EXPECT_GT(invalid, 200);
}

TEST(FuzzTest, RandomIdStreamsMatchFullDecode) {
  std::mt19937_64 rng(Seed() + 2);
  for (const char* name : {"llama3", "qwen3", "mistral"}) {
    const Tokenizer& tok = LoadShared(name);
    const size_t vocab = tok.VocabSize();
    for (int iter = 0; iter < 300; ++iter) {
      std::vector<TokenId> ids;
      for (size_t k = 0, n = rng() % 40; k < n; ++k) {
        TokenId id = static_cast<TokenId>(rng() % 2 ? rng() % 300 : rng() % vocab);  // low ids: bytes, specials
        if (tok.IdToToken(id) != nullptr) ids.push_back(id);
      }
      for (bool skip : {false, true}) {
        StreamDetokenizer d(tok, skip);
        std::string streamed;
        for (TokenId id : ids) {
          auto delta = d.Push(id);
          ASSERT_TRUE(delta.ok());
          ASSERT_TRUE(ValidateUtf8(*delta, "delta").ok());
          streamed += *delta;
        }
        streamed += d.Finish();
        EXPECT_EQ(streamed, *tok.Decode(ids, skip)) << name;
      }
    }
  }
}

TEST(FuzzTest, MutatedChatTemplatesCompileOrFailCleanly) {
  std::mt19937_64 rng(Seed() + 3);
  auto cfg = nlohmann::json::parse(testing::ReadText(testing::TokenizerDir("qwen3") + "/tokenizer_config.json"));
  const std::string base = cfg["chat_template"];
  const auto vars = nlohmann::ordered_json::parse(
      R"({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"},
          {"role": "assistant", "content": "<think>x</think>y"}], "add_generation_prompt": true})");
  int compiled = 0;
  for (int iter = 0; iter < 1500; ++iter) {
    std::string t = base;
    for (int m = 0, n = 1 + rng() % 3; m < n; ++m) {
      const size_t pos = rng() % (t.size() + 1);
      switch (rng() % 3) {
        case 0: t.insert(t.begin() + pos, "{}%#-+|.()[]'\"~ifor"[rng() % 20]); break;
        case 1: t.erase(pos, rng() % 8); break;
        default: if (pos < t.size()) t[pos] = static_cast<char>(0x20 + rng() % 0x5f); break;
      }
    }
    auto c = ChatTemplate::Compile(t);
    if (!c.ok()) continue;
    ++compiled;
    auto out = (*c)->Render(vars);  // may fail; must not crash
    if (out.ok()) {
      EXPECT_TRUE(ValidateUtf8(*out, "render").ok());
    }
  }
  EXPECT_GT(compiled, 10);
}

}  // namespace
}  // namespace gqa
