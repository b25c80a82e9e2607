// Added (and special) tokens of tokenizer.json: found in the input before the
// normalizer and BPE run, leftmost-longest like HF's AddedVocabulary.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "tokenizer/bpe.h"

namespace gqa {

struct AddedToken {
  TokenId id;
  std::string content;
  bool special = false;
  bool lstrip = false, rstrip = false, single_word = false, normalized = false;
};

// A piece of input: either an added token (id >= 0) or text to tokenize.
struct Segment {
  std::string_view text;
  TokenId id = -1;
};

class AddedVocabulary {
 public:
  static absl::StatusOr<AddedVocabulary> FromJson(const nlohmann::json& added_tokens);

  // Splits `text` at matches of the added tokens whose `normalized` flag
  // equals `normalized` (HF: raw text first, normalized text second). With
  // skip_special, special tokens are not matched (they stay plain text);
  // nor are they where they overlap one of `literal` (byte ranges).
  void Split(std::string_view text, bool normalized, bool skip_special, std::vector<Segment>* out,
             const std::vector<std::pair<size_t, size_t>>* literal = nullptr) const;
  bool has_normalized() const { return has_normalized_; }

  const AddedToken* ById(TokenId id) const;
  TokenId IdOf(std::string_view content) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  // Longest token (of the given `normalized` kind) at text[pos], or nullptr.
  const AddedToken* MatchAt(std::string_view text, size_t pos, bool normalized) const;

  std::vector<AddedToken> tokens_;
  absl::flat_hash_map<TokenId, size_t> by_id_;
  absl::flat_hash_map<std::string, size_t> by_content_;
  bool first_byte_[256] = {};
  std::vector<size_t> lengths_;
  bool has_normalized_ = false;  // distinct token lengths, longest first
};

}  // namespace gqa
