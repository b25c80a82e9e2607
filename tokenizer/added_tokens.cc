// Added-token matching: see added_tokens.h.
#include "tokenizer/added_tokens.h"

#include <algorithm>

#include <unicode/uchar.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "tokenizer/unicode.h"

namespace gqa {

absl::StatusOr<AddedVocabulary> AddedVocabulary::FromJson(const nlohmann::json& j) {
  AddedVocabulary v;
  if (j.is_null()) return v;
  if (!j.is_array()) return absl::InvalidArgumentError("added_tokens: expected an array");
  for (const auto& t : j) {
    if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() || !t.contains("content") || !t["content"].is_string()) {
      return absl::InvalidArgumentError("added_tokens: each entry needs an integer \"id\" and a string \"content\"");
    }
    AddedToken a;
    const int64_t id = t["id"].get<int64_t>();
    if (id < 0 || id >= (int64_t{1} << 30)) return absl::InvalidArgumentError(absl::StrCat("added_tokens: id ", id, " out of range"));
    a.id = static_cast<TokenId>(id);
    a.content = t["content"].get<std::string>();
    if (a.content.empty()) return absl::InvalidArgumentError(absl::StrCat("added_tokens: token ", id, " has empty content"));
    auto flag = [&](const char* key) { return t.contains(key) && t[key].is_boolean() && t[key].get<bool>(); };
    a.special = flag("special");
    a.lstrip = flag("lstrip");
    a.rstrip = flag("rstrip");
    a.single_word = flag("single_word");
    a.normalized = t.contains("normalized") && t["normalized"].is_boolean() ? t["normalized"].get<bool>() : !a.special;
    if (v.by_content_.contains(a.content)) continue;  // first definition wins
    v.by_id_[a.id] = v.tokens_.size();
    v.by_content_[a.content] = v.tokens_.size();
    v.first_byte_[static_cast<unsigned char>(a.content[0])] = true;
    v.lengths_.push_back(a.content.size());
    v.has_normalized_ |= a.normalized;
    v.tokens_.push_back(std::move(a));
  }
  std::sort(v.lengths_.begin(), v.lengths_.end(), std::greater<>());
  v.lengths_.erase(std::unique(v.lengths_.begin(), v.lengths_.end()), v.lengths_.end());
  return v;
}

const AddedToken* AddedVocabulary::ById(TokenId id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

TokenId AddedVocabulary::IdOf(std::string_view content) const {
  auto it = by_content_.find(AV(content));
  return it == by_content_.end() ? -1 : tokens_[it->second].id;
}

namespace {

// Rust's char::is_whitespace (Unicode White_Space), as HF's lstrip/rstrip use.
bool IsWhitespace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0d) || cp == 0x20 || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f ||
         cp == 0x3000;
}

// HF's is_word_char: char::is_alphanumeric() || '_'.
bool IsWordChar(uint32_t cp) {
  if (cp < 0x80) return absl::ascii_isalnum(static_cast<unsigned char>(cp)) || cp == '_';
  if (u_hasBinaryProperty(static_cast<UChar32>(cp), UCHAR_ALPHABETIC)) return true;
  const int8_t t = u_charType(static_cast<UChar32>(cp));
  return t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER;
}

// Start of the character that ends at text[end).
size_t PrevCharStart(std::string_view text, size_t end) {
  size_t b = end - 1;
  while (b > 0 && (static_cast<unsigned char>(text[b]) & 0xC0) == 0x80) --b;
  return b;
}

}  // namespace

const AddedToken* AddedVocabulary::MatchAt(std::string_view text, size_t pos, bool normalized) const {
  for (size_t len : lengths_) {
    if (pos + len > text.size()) continue;
    auto it = by_content_.find(AV(text.substr(pos, len)));
    if (it == by_content_.end()) continue;
    const AddedToken& t = tokens_[it->second];
    if (t.normalized != normalized) continue;
    return &t;  // leftmost-longest, like HF's aho-corasick matcher
  }
  return nullptr;
}

void AddedVocabulary::Split(std::string_view text, bool normalized, bool skip_special, std::vector<Segment>* out,
                            const std::vector<std::pair<size_t, size_t>>* literal) const {
  if (tokens_.empty()) {
    if (!text.empty()) out->push_back({text, -1});
    return;
  }
  size_t start = 0;  // start of the pending text segment
  size_t pos = 0;
  while (pos < text.size()) {
    if (!first_byte_[static_cast<unsigned char>(text[pos])]) {
      ++pos;
      continue;
    }
    const AddedToken* t = MatchAt(text, pos, normalized);
    if (t == nullptr) {
      ++pos;
      continue;
    }
    const size_t end = pos + t->content.size();
    // As in HF, a match that is rejected is skipped as a whole.
    bool in_literal = false;
    if (literal != nullptr && t->special) {
      for (const auto& [b, e] : *literal) in_literal = in_literal || (b < end && pos < e);
    }
    if ((skip_special || in_literal) && t->special) {
      pos = end;
      continue;
    }
    if (t->single_word) {
      size_t i = end;
      const bool word_before = pos > 0 && [&] {
        size_t b = PrevCharStart(text, pos);
        return IsWordChar(NextCodePoint(text, &b));
      }();
      const bool word_after = end < text.size() && IsWordChar(NextCodePoint(text, &i));
      if (word_before || word_after) {
        pos = end;
        continue;
      }
    }
    size_t seg_end = pos, next = end;
    if (t->lstrip) {
      while (seg_end > start) {
        size_t b = PrevCharStart(text, seg_end), i = b;
        if (!IsWhitespace(NextCodePoint(text, &i))) break;
        seg_end = b;
      }
    }
    if (t->rstrip) {
      while (next < text.size()) {
        size_t i = next;
        if (!IsWhitespace(NextCodePoint(text, &i))) break;
        next = i;
      }
    }
    if (seg_end > start) out->push_back({text.substr(start, seg_end - start), -1});
    out->push_back({text.substr(pos, t->content.size()), t->id});
    start = pos = next;
  }
  if (start < text.size()) out->push_back({text.substr(start), -1});
}

}  // namespace gqa
