// Decoders: see decoder.h. Each stage mirrors the decode_chain of the Hugging
// Face component of the same name; "fused" stages run after Fuse/ByteLevel,
// when the rest of the chain sees one growing string instead of tokens.
#include "tokenizer/decoder.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "tokenizer/unicode.h"

namespace gqa {

struct DecoderSpec::StageConfig {
  enum class Kind { kByteLevel, kMetaspace, kReplace, kByteFallback, kFuse, kStrip } kind;
  bool fused = false;        // runs on the fused stream
  std::string a, b;          // Replace: pattern, content; Metaspace: replacement; Strip: content
  bool prepend = true;       // Metaspace: prepend_scheme != never
  size_t start = 0, stop = 0;  // Strip
};

namespace {

using Kind = DecoderSpec::StageConfig::Kind;
using Tokens = std::vector<std::string>;

class ByteLevelStage : public DecoderStage {
 public:
  Tokens Push(Tokens tokens) override {
    const ByteLevelMap& map = GetByteLevelMap();
    std::string bytes;
    for (const std::string& t : tokens) {
      std::string tb;
      bool all = true;
      size_t i = 0;
      while (i < t.size()) {
        uint32_t cp = NextCodePoint(t, &i);
        if (cp >= 512 || map.cp_to_byte[cp] < 0) {
          all = false;
          break;
        }
        tb.push_back(static_cast<char>(map.cp_to_byte[cp]));
      }
      bytes += all ? tb : t;  // unmapped characters: the token's own bytes
    }
    std::string out = utf8_.Push(bytes);
    if (out.empty()) return {};
    return {std::move(out)};
  }
  Tokens Flush() override {
    std::string out = utf8_.Finish();
    if (out.empty()) return {};
    return {std::move(out)};
  }

 private:
  Utf8LossyStream utf8_;
};

class MetaspaceStage : public DecoderStage {
 public:
  MetaspaceStage(std::string replacement, bool prepend) : repl_(std::move(replacement)), prepend_(prepend) {}
  Tokens Push(Tokens tokens) override {
    for (std::string& t : tokens) {
      // HF drops every replacement char of the very first token.
      t = absl::StrReplaceAll(t, {{repl_, first_ && prepend_ ? "" : " "}});
      first_ = false;
    }
    return tokens;
  }

 private:
  std::string repl_;
  bool prepend_;
  bool first_ = true;
};

class ReplaceStage : public DecoderStage {
 public:
  ReplaceStage(std::string from, std::string to, bool fused) : from_(std::move(from)), to_(std::move(to)), fused_(fused) {}
  Tokens Push(Tokens tokens) override {
    if (!fused_) {
      for (std::string& t : tokens) t = absl::StrReplaceAll(t, {{from_, to_}});
      return tokens;
    }
    std::string buf = held_;
    for (const std::string& t : tokens) buf += t;
    // Replace complete matches left to right (as the whole-string replace
    // does), then hold back the longest suffix of the rest that is a proper
    // prefix of the pattern: it may become a match with the next token.
    std::string out;
    size_t pos = 0;
    for (size_t m = buf.find(from_); m != std::string::npos; m = buf.find(from_, pos)) {
      out.append(buf, pos, m - pos);
      out += to_;
      pos = m + from_.size();
    }
    size_t hold = 0;
    for (size_t k = std::min(from_.size() - 1, buf.size() - pos); k > 0; --k) {
      if (buf.compare(buf.size() - k, k, from_, 0, k) == 0) {
        hold = k;
        break;
      }
    }
    out.append(buf, pos, buf.size() - pos - hold);
    held_ = buf.substr(buf.size() - hold);
    if (out.empty()) return {};
    return {std::move(out)};
  }
  Tokens Flush() override {
    if (held_.empty()) return {};
    return {std::exchange(held_, "")};
  }

 private:
  std::string from_, to_;
  bool fused_;
  std::string held_;
};

// Groups of consecutive <0xNN> tokens become their UTF-8 text, or one U+FFFD
// per byte when the group is not valid UTF-8. A group is held until it ends.
class ByteFallbackStage : public DecoderStage {
 public:
  Tokens Push(Tokens tokens) override {
    Tokens out;
    for (std::string& t : tokens) {
      int byte = ParseByte(t);
      if (byte >= 0) {
        group_.push_back(static_cast<char>(byte));
        continue;
      }
      FlushGroup(&out);
      out.push_back(std::move(t));
    }
    return out;
  }
  Tokens Flush() override {
    Tokens out;
    FlushGroup(&out);
    return out;
  }

 private:
  static int ParseByte(const std::string& t) {
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
    int v = 0;
    for (int k = 3; k < 5; ++k) {
      const char c = t[k];
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (d < 0) return -1;
      v = v * 16 + d;
    }
    return v;
  }
  void FlushGroup(Tokens* out) {
    if (group_.empty()) return;
    if (ValidateUtf8(group_, "").ok()) {
      out->push_back(group_);
    } else {
      for (size_t k = 0; k < group_.size(); ++k) out->emplace_back(kReplacementChar);
    }
    group_.clear();
  }
  std::string group_;
};

class FuseStage : public DecoderStage {
 public:
  Tokens Push(Tokens tokens) override {
    std::string s = absl::StrJoin(tokens, "");
    if (s.empty()) return {};
    return {std::move(s)};
  }
};

// Strips up to `start` leading and `stop` trailing copies of one character.
class StripStage : public DecoderStage {
 public:
  StripStage(std::string content, size_t start, size_t stop, bool fused)
      : content_(std::move(content)), start_(start), stop_(stop), fused_(fused) {}
  Tokens Push(Tokens tokens) override {
    if (!fused_) {
      for (std::string& t : tokens) t = StripOne(t);
      return tokens;
    }
    std::string buf;
    for (const std::string& t : tokens) buf += t;
    size_t i = 0;
    // Leading part of the whole stream.
    while (i < buf.size() && leading_checked_ < start_) {
      if (buf.compare(i, content_.size(), content_) == 0) {
        i += content_.size();
        ++leading_checked_;
      } else {
        leading_checked_ = start_;
      }
    }
    std::string rest = held_ + buf.substr(i);
    held_.clear();
    if (stop_ > 0) {
      // Hold back a trailing run of the content character.
      size_t end = rest.size();
      while (end >= content_.size() && rest.compare(end - content_.size(), content_.size(), content_) == 0) end -= content_.size();
      held_ = rest.substr(end);
      rest.resize(end);
    }
    if (rest.empty()) return {};
    return {std::move(rest)};
  }
  Tokens Flush() override {
    size_t n = held_.size() / content_.size();
    size_t keep = n > stop_ ? n - stop_ : 0;
    std::string out;
    for (size_t k = 0; k < keep; ++k) out += content_;
    held_.clear();
    if (out.empty()) return {};
    return {std::move(out)};
  }

 private:
  std::string StripOne(const std::string& t) const {
    size_t b = 0, e = t.size();
    for (size_t k = 0; k < start_ && t.compare(b, content_.size(), content_) == 0 && b < e; ++k) b += content_.size();
    for (size_t k = 0; k < stop_ && e >= b + content_.size() && t.compare(e - content_.size(), content_.size(), content_) == 0; ++k) e -= content_.size();
    return t.substr(b, e - b);
  }
  std::string content_;
  size_t start_, stop_;
  bool fused_;
  size_t leading_checked_ = 0;
  std::string held_;
};

absl::Status ParseInto(const nlohmann::json& j, bool* fused, std::vector<std::unique_ptr<DecoderSpec::StageConfig>>* out) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
    return absl::InvalidArgumentError("decoder: expected an object with a string \"type\"");
  }
  const std::string type = j["type"].get<std::string>();
  auto cfg = std::make_unique<DecoderSpec::StageConfig>();
  cfg->fused = *fused;
  auto str = [&](const char* key, std::string def) -> std::string {
    return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : def;
  };
  if (type == "Sequence") {
    if (!j.contains("decoders") || !j["decoders"].is_array()) return absl::InvalidArgumentError("decoder Sequence: missing array \"decoders\"");
    for (const auto& sub : j["decoders"]) {
      absl::Status s = ParseInto(sub, fused, out);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  if (type == "ByteLevel") {
    if (*fused) return absl::UnimplementedError("decoder ByteLevel after Fuse is not supported");
    cfg->kind = Kind::kByteLevel;
    *fused = true;
  } else if (type == "Metaspace") {
    if (*fused) return absl::UnimplementedError("decoder Metaspace after Fuse is not supported");
    cfg->kind = Kind::kMetaspace;
    cfg->a = str("replacement", "\xE2\x96\x81");
    const std::string scheme = str("prepend_scheme", "always");
    cfg->prepend = scheme != "never";
    if (j.contains("add_prefix_space") && j["add_prefix_space"].is_boolean() && !j.contains("prepend_scheme")) cfg->prepend = j["add_prefix_space"].get<bool>();
  } else if (type == "Replace") {
    cfg->kind = Kind::kReplace;
    if (!j.contains("pattern") || !j["pattern"].is_object() || !j["pattern"].contains("String") || !j["pattern"]["String"].is_string()) {
      return absl::UnimplementedError("decoder Replace: only {\"String\": ...} patterns are supported");
    }
    cfg->a = j["pattern"]["String"].get<std::string>();
    if (cfg->a.empty()) return absl::InvalidArgumentError("decoder Replace: empty pattern");
    if (!j.contains("content") || !j["content"].is_string()) return absl::InvalidArgumentError("decoder Replace: missing string \"content\"");
    cfg->b = j["content"].get<std::string>();
  } else if (type == "ByteFallback") {
    if (*fused) return absl::UnimplementedError("decoder ByteFallback after Fuse is not supported");
    cfg->kind = Kind::kByteFallback;
  } else if (type == "Fuse") {
    cfg->kind = Kind::kFuse;
    *fused = true;
  } else if (type == "Strip") {
    cfg->kind = Kind::kStrip;
    cfg->a = str("content", " ");
    if (cfg->a.empty() || Utf8CharLen(cfg->a, 0) != static_cast<int>(cfg->a.size())) return absl::InvalidArgumentError("decoder Strip: content must be one character");
    auto num = [&](const char* key) -> size_t { return j.contains(key) && j[key].is_number_unsigned() ? j[key].get<size_t>() : 0; };
    cfg->start = num("start");
    cfg->stop = num("stop");
  } else {
    return absl::UnimplementedError(absl::StrCat("unsupported decoder type \"", type, "\""));
  }
  out->push_back(std::move(cfg));
  return absl::OkStatus();
}

}  // namespace

DecoderSpec::~DecoderSpec() = default;

absl::StatusOr<std::unique_ptr<DecoderSpec>> DecoderSpec::FromJson(const nlohmann::json& j) {
  auto spec = std::unique_ptr<DecoderSpec>(new DecoderSpec());
  if (j.is_null()) {
    spec->no_decoder_ = true;
    return spec;
  }
  bool fused = false;
  absl::Status s = ParseInto(j, &fused, &spec->configs_);
  if (!s.ok()) return s;
  return spec;
}

DecoderSpec::Stream DecoderSpec::NewStream() const {
  Stream st;
  st.join_with_space_ = no_decoder_;
  for (const auto& c : configs_) {
    switch (c->kind) {
      case Kind::kByteLevel: st.stages_.push_back(std::make_unique<ByteLevelStage>()); break;
      case Kind::kMetaspace: st.stages_.push_back(std::make_unique<MetaspaceStage>(c->a, c->prepend)); break;
      case Kind::kReplace: st.stages_.push_back(std::make_unique<ReplaceStage>(c->a, c->b, c->fused)); break;
      case Kind::kByteFallback: st.stages_.push_back(std::make_unique<ByteFallbackStage>()); break;
      case Kind::kFuse: st.stages_.push_back(std::make_unique<FuseStage>()); break;
      case Kind::kStrip: st.stages_.push_back(std::make_unique<StripStage>(c->a, c->start, c->stop, c->fused)); break;
    }
  }
  return st;
}

std::string DecoderSpec::Stream::Push(std::vector<std::string> tokens) {
  if (join_with_space_) {
    std::string out;
    for (const std::string& t : tokens) {
      if (any_) out += ' ';
      out += t;
      any_ = true;
    }
    return out;
  }
  for (auto& stage : stages_) tokens = stage->Push(std::move(tokens));
  return absl::StrJoin(tokens, "");
}

std::string DecoderSpec::Stream::Finish() {
  std::vector<std::string> carry;
  for (auto& stage : stages_) {
    carry = stage->Push(std::move(carry));
    for (std::string& t : stage->Flush()) carry.push_back(std::move(t));
  }
  return absl::StrJoin(carry, "");
}

std::string DecoderSpec::Decode(std::vector<std::string> tokens) const {
  Stream st = NewStream();
  std::string out = st.Push(std::move(tokens));
  out += st.Finish();
  return out;
}

}  // namespace gqa
