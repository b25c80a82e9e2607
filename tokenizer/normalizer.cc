// Normalizers; NFC uses ICU (libicu, icu-uc), the Unicode reference library.
#include "tokenizer/normalizer.h"

#include <vector>

#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "tokenizer/unicode.h"

namespace gqa {
namespace {

class NfcNormalizer : public Normalizer {
 public:
  explicit NfcNormalizer(const icu::Normalizer2* nfc) : nfc_(nfc) {}
  std::string Normalize(std::string_view text) const override {
    // Fast path: ASCII is always NFC.
    bool ascii = true;
    for (char c : text) ascii &= static_cast<unsigned char>(c) < 0x80;
    if (ascii) return std::string(text);
    UErrorCode status = U_ZERO_ERROR;
    icu::UnicodeString in = icu::UnicodeString::fromUTF8(
        icu::StringPiece(text.data(), static_cast<int32_t>(text.size())));
    if (nfc_->isNormalized(in, status) && U_SUCCESS(status)) return std::string(text);
    status = U_ZERO_ERROR;
    icu::UnicodeString norm = nfc_->normalize(in, status);
    if (U_FAILURE(status)) return std::string(text);  // ICU cannot fail on valid input
    std::string out;
    norm.toUTF8String(out);
    return out;
  }

 private:
  const icu::Normalizer2* nfc_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  std::string Normalize(std::string_view text) const override {
    if (text.empty()) return "";  // HF prepends only to non-empty text
    return absl::StrCat(prefix_, AV(text));
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(std::string from, std::string to) : from_(std::move(from)), to_(std::move(to)) {}
  std::string Normalize(std::string_view text) const override {
    return absl::StrReplaceAll(AV(text), {{from_, to_}});
  }

 private:
  std::string from_, to_;
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts)
      : parts_(std::move(parts)) {}
  std::string Normalize(std::string_view text) const override {
    std::string s(text);
    for (const auto& p : parts_) s = p->Normalize(s);
    return s;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

absl::StatusOr<std::string> StringField(const nlohmann::json& j, const char* key,
                                        std::string_view component) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat("normalizer ", AV(component), ": missing string field \"", key, "\""));
  }
  return j[key].get<std::string>();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(const nlohmann::json& j) {
  if (j.is_null()) return std::unique_ptr<Normalizer>();
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
    return absl::InvalidArgumentError("normalizer: expected an object with a string \"type\"");
  }
  const std::string type = j["type"].get<std::string>();
  if (type == "NFC") {
    UErrorCode status = U_ZERO_ERROR;
    const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(status);
    if (U_FAILURE(status)) return absl::InternalError("ICU: cannot load the NFC normalizer data");
    return std::unique_ptr<Normalizer>(new NfcNormalizer(nfc));
  }
  if (type == "Prepend") {
    auto p = StringField(j, "prepend", type);
    if (!p.ok()) return p.status();
    return std::unique_ptr<Normalizer>(new PrependNormalizer(*p));
  }
  if (type == "Replace") {
    const auto& pat = j.value("pattern", nlohmann::json());
    if (!pat.is_object() || !pat.contains("String") || !pat["String"].is_string()) {
      return absl::InvalidArgumentError(
          "normalizer Replace: only {\"String\": ...} patterns are supported (Regex is not)");
    }
    auto content = StringField(j, "content", type);
    if (!content.ok()) return content.status();
    std::string from = pat["String"].get<std::string>();
    if (from.empty()) return absl::InvalidArgumentError("normalizer Replace: empty pattern");
    return std::unique_ptr<Normalizer>(new ReplaceNormalizer(std::move(from), *content));
  }
  if (type == "Sequence") {
    if (!j.contains("normalizers") || !j["normalizers"].is_array()) {
      return absl::InvalidArgumentError("normalizer Sequence: missing array \"normalizers\"");
    }
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (const auto& sub : j["normalizers"]) {
      auto n = MakeNormalizer(sub);
      if (!n.ok()) return n.status();
      if (*n) parts.push_back(std::move(*n));
    }
    return std::unique_ptr<Normalizer>(new SequenceNormalizer(std::move(parts)));
  }
  return absl::UnimplementedError(absl::StrCat("unsupported normalizer type \"", type, "\""));
}

}  // namespace gqa
