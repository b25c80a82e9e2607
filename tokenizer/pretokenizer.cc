// Pre-tokenizers; regexes run on PCRE2 (Debian libpcre2-8) with UTF and UCP
// so that \p{L}, \p{N}, \s and lookahead behave as in the Oniguruma regexes
// Hugging Face tokenizers uses.
#include "tokenizer/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "tokenizer/unicode.h"

namespace gqa {

namespace {

// Unicode White_Space, which is what \s means in the Oniguruma regexes of HF
// tokenizers. PCRE2's \s (UCP) also matches U+180E, which Unicode no longer
// counts as a space, so \s and \S are spelled out before compiling.
constexpr std::string_view kWhiteSpace =
    R"(\x{9}-\x{d}\x{20}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000})";

std::string SpellOutWhiteSpace(std::string_view p) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char n = p[++i];
      if (n == 's') {
        out += in_class ? std::string(kWhiteSpace) : absl::StrCat("[", AV(kWhiteSpace), "]");
      } else if (n == 'S' && !in_class) {
        out += absl::StrCat("[^", AV(kWhiteSpace), "]");
      } else {
        out += c;
        out += n;  // includes \S inside a class, left to PCRE2
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Regex>> Regex::Compile(std::string_view pattern_in, bool literal) {
  const std::string spelled = literal ? std::string(pattern_in) : SpellOutWhiteSpace(pattern_in);
  const std::string_view pattern = spelled;
  int err = 0;
  PCRE2_SIZE err_off = 0;
  uint32_t opts = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   opts, &err, &err_off, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    return absl::InvalidArgumentError(absl::StrCat("regex \"", AV(pattern), "\" does not compile at offset ",
                                                   err_off, ": ", reinterpret_cast<char*>(msg)));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter on failure
  auto re = std::unique_ptr<Regex>(new Regex());
  re->code_ = code;
  return re;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

absl::Status Regex::FindAll(std::string_view text, std::vector<std::pair<size_t, size_t>>* spans) const {
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  size_t pos = 0;
  while (pos <= text.size()) {
    // Input is validated UTF-8 before it gets here.
    auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    int rc = pcre2_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {  // the interpreter keeps its backtracking on the heap
      rc = pcre2_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof(msg));
      pcre2_match_data_free(md);
      return absl::ResourceExhaustedError(absl::StrCat("pre-tokenizer regex failed at byte ", pos, ": ",
                                                       reinterpret_cast<char*>(msg)));
    }
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    size_t b = ov[0], e = ov[1];
    if (e == b) {  // empty match: skip one character
      if (b >= text.size()) break;
      int n = Utf8CharLen(text, b);
      pos = b + (n > 0 ? n : 1);
      continue;
    }
    spans->emplace_back(b, e);
    pos = e;
  }
  pcre2_match_data_free(md);
  return absl::OkStatus();
}

namespace {

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Regex> re, Behavior b, bool invert)
      : re_(std::move(re)), behavior_(b), invert_(invert) {}

  absl::Status Apply(std::vector<std::string>* pieces, bool) const override {
    std::vector<std::string> out;
    std::vector<std::pair<size_t, size_t>> spans;
    for (const std::string& p : *pieces) {
      spans.clear();
      if (absl::Status s = re_->FindAll(p, &spans); !s.ok()) return s;
      // (begin, end, is_match) covering p.
      struct Part {
        size_t b, e;
        bool match;
      };
      std::vector<Part> parts;
      size_t prev = 0;
      for (auto [b, e] : spans) {
        if (b != prev) parts.push_back({prev, b, false});
        parts.push_back({b, e, true});
        prev = e;
      }
      if (prev != p.size()) parts.push_back({prev, p.size(), false});
      if (invert_) for (auto& part : parts) part.match = !part.match;
      std::vector<std::pair<size_t, size_t>> pieces_out;
      switch (behavior_) {
        case Behavior::kRemoved:
          for (auto& part : parts) if (!part.match) pieces_out.emplace_back(part.b, part.e);
          break;
        case Behavior::kIsolated:
          for (auto& part : parts) pieces_out.emplace_back(part.b, part.e);
          break;
        case Behavior::kMergedWithPrevious: {
          bool prev_match = false;
          for (auto& part : parts) {
            if (part.match && !pieces_out.empty() && !prev_match) pieces_out.back().second = part.e;
            else pieces_out.emplace_back(part.b, part.e);
            prev_match = part.match;
          }
          break;
        }
        case Behavior::kMergedWithNext: {
          bool prev_match = false;
          for (auto& part : parts) {
            if (!part.match && !pieces_out.empty() && prev_match) pieces_out.back().second = part.e;
            else pieces_out.emplace_back(part.b, part.e);
            prev_match = part.match;
          }
          break;
        }
        case Behavior::kContiguous: {
          bool prev_match = false;
          for (auto& part : parts) {
            if (part.match == prev_match && !pieces_out.empty()) pieces_out.back().second = part.e;
            else pieces_out.emplace_back(part.b, part.e);
            prev_match = part.match;
          }
          break;
        }
      }
      for (auto [b, e] : pieces_out)
        if (e > b) out.emplace_back(p.substr(b, e - b));
    }
    *pieces = std::move(out);
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<Regex> re_;
  Behavior behavior_;
  bool invert_;
};

// The GPT-2 pattern ByteLevel uses when use_regex is true.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<SplitPreTokenizer> split)
      : add_prefix_space_(add_prefix_space), split_(std::move(split)) {}

  absl::Status Apply(std::vector<std::string>* pieces, bool first) const override {
    if (add_prefix_space_) {
      for (auto& p : *pieces) if (p.empty() || p[0] != ' ') p.insert(p.begin(), ' ');
    }
    if (split_) {
      if (absl::Status s = split_->Apply(pieces, first); !s.ok()) return s;
    }
    const ByteLevelMap& map = GetByteLevelMap();
    for (auto& p : *pieces) {
      std::string mapped;
      mapped.reserve(p.size() * 2);
      for (unsigned char c : p) mapped += map.byte_to_utf8[c];
      p = std::move(mapped);
    }
    return absl::OkStatus();
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<SplitPreTokenizer> split_;
};

// Metaspace (older Llama 2 / SentencePiece exports): spaces become the
// replacement character, optionally prepended, then split before each one.
class MetaspacePreTokenizer : public PreTokenizer {
 public:
  enum class Prepend { kAlways, kFirst, kNever };
  MetaspacePreTokenizer(std::string replacement, Prepend prepend, bool split)
      : replacement_(std::move(replacement)), prepend_(prepend), split_(split) {}

  absl::Status Apply(std::vector<std::string>* pieces, bool first) const override {
    std::vector<std::string> out;
    for (size_t i = 0; i < pieces->size(); ++i) {
      std::string s = absl::StrReplaceAll((*pieces)[i], {{" ", replacement_}});
      const bool want = prepend_ == Prepend::kAlways || (prepend_ == Prepend::kFirst && first && i == 0);
      if (want && s.compare(0, replacement_.size(), replacement_) != 0) s = replacement_ + s;
      if (!split_) {
        out.push_back(std::move(s));
        continue;
      }
      // MergedWithNext on the replacement string.
      size_t start = 0;
      size_t pos = s.find(replacement_, 1);
      while (pos != std::string::npos) {
        out.push_back(s.substr(start, pos - start));
        start = pos;
        pos = s.find(replacement_, pos + replacement_.size());
      }
      if (start < s.size()) out.push_back(s.substr(start));
    }
    *pieces = std::move(out);
    return absl::OkStatus();
  }

 private:
  std::string replacement_;
  Prepend prepend_;
  bool split_;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts)
      : parts_(std::move(parts)) {}
  absl::Status Apply(std::vector<std::string>* pieces, bool first) const override {
    for (const auto& p : parts_) {
      if (absl::Status s = p->Apply(pieces, first); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

absl::StatusOr<bool> BoolField(const nlohmann::json& j, const char* key, bool def) {
  if (!j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_boolean()) return absl::InvalidArgumentError(absl::StrCat("pre_tokenizer: \"", key, "\" must be a boolean"));
  return j[key].get<bool>();
}

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(const nlohmann::json& j) {
  if (j.is_null()) return std::unique_ptr<PreTokenizer>();
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
    return absl::InvalidArgumentError("pre_tokenizer: expected an object with a string \"type\"");
  }
  const std::string type = j["type"].get<std::string>();
  if (type == "Split") {
    if (!j.contains("pattern") || !j["pattern"].is_object()) {
      return absl::InvalidArgumentError("pre_tokenizer Split: missing object \"pattern\"");
    }
    const auto& pat = j["pattern"];
    std::unique_ptr<Regex> re;
    if (pat.contains("Regex") && pat["Regex"].is_string()) {
      auto r = Regex::Compile(pat["Regex"].get<std::string>(), false);
      if (!r.ok()) return absl::InvalidArgumentError(absl::StrCat("pre_tokenizer Split: ", r.status().message()));
      re = std::move(*r);
    } else if (pat.contains("String") && pat["String"].is_string()) {
      auto r = Regex::Compile(pat["String"].get<std::string>(), true);
      if (!r.ok()) return r.status();
      re = std::move(*r);
    } else {
      return absl::InvalidArgumentError("pre_tokenizer Split: pattern needs \"Regex\" or \"String\"");
    }
    const std::string behavior = j.contains("behavior") && j["behavior"].is_string() ? j["behavior"].get<std::string>() : "";
    Behavior b;
    if (behavior == "Removed") b = Behavior::kRemoved;
    else if (behavior == "Isolated") b = Behavior::kIsolated;
    else if (behavior == "MergedWithPrevious") b = Behavior::kMergedWithPrevious;
    else if (behavior == "MergedWithNext") b = Behavior::kMergedWithNext;
    else if (behavior == "Contiguous") b = Behavior::kContiguous;
    else return absl::InvalidArgumentError(absl::StrCat("pre_tokenizer Split: unknown behavior \"", behavior, "\""));
    auto invert = BoolField(j, "invert", false);
    if (!invert.ok()) return invert.status();
    return std::unique_ptr<PreTokenizer>(new SplitPreTokenizer(std::move(re), b, *invert));
  }
  if (type == "ByteLevel") {
    auto aps = BoolField(j, "add_prefix_space", true);
    auto use_regex = BoolField(j, "use_regex", true);
    if (!aps.ok()) return aps.status();
    if (!use_regex.ok()) return use_regex.status();
    std::unique_ptr<SplitPreTokenizer> split;
    if (*use_regex) {
      auto r = Regex::Compile(kGpt2Pattern, false);
      if (!r.ok()) return r.status();
      split = std::make_unique<SplitPreTokenizer>(std::move(*r), Behavior::kIsolated, false);
    }
    return std::unique_ptr<PreTokenizer>(new ByteLevelPreTokenizer(*aps, std::move(split)));
  }
  if (type == "Metaspace") {
    std::string repl = j.contains("replacement") && j["replacement"].is_string() ? j["replacement"].get<std::string>() : "\xE2\x96\x81";
    auto split = BoolField(j, "split", true);
    if (!split.ok()) return split.status();
    MetaspacePreTokenizer::Prepend prepend = MetaspacePreTokenizer::Prepend::kAlways;
    if (j.contains("prepend_scheme") && j["prepend_scheme"].is_string()) {
      const std::string s = j["prepend_scheme"].get<std::string>();
      if (s == "first") prepend = MetaspacePreTokenizer::Prepend::kFirst;
      else if (s == "never") prepend = MetaspacePreTokenizer::Prepend::kNever;
      else if (s != "always") return absl::InvalidArgumentError(absl::StrCat("pre_tokenizer Metaspace: unknown prepend_scheme \"", s, "\""));
    } else if (j.contains("add_prefix_space") && j["add_prefix_space"].is_boolean() && !j["add_prefix_space"].get<bool>()) {
      prepend = MetaspacePreTokenizer::Prepend::kNever;
    }
    return std::unique_ptr<PreTokenizer>(new MetaspacePreTokenizer(repl, prepend, *split));
  }
  if (type == "Sequence") {
    if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array()) {
      return absl::InvalidArgumentError("pre_tokenizer Sequence: missing array \"pretokenizers\"");
    }
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (const auto& sub : j["pretokenizers"]) {
      auto p = MakePreTokenizer(sub);
      if (!p.ok()) return p.status();
      if (*p) parts.push_back(std::move(*p));
    }
    return std::unique_ptr<PreTokenizer>(new SequencePreTokenizer(std::move(parts)));
  }
  return absl::UnimplementedError(absl::StrCat("unsupported pre_tokenizer type \"", type, "\""));
}

}  // namespace gqa
