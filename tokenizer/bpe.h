// The BPE model of tokenizer.json: vocabulary, merge-rank table, byte
// fallback, unk handling, ignore_merges, and a bounded cache of word results.
#pragma once

#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace gqa {

using TokenId = int32_t;

class BpeModel {
 public:
  // Parses the "model" object (type must be "BPE").
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(const nlohmann::json& model);

  // Appends the ids of one pre-tokenized word (valid UTF-8).
  void EncodeWord(std::string_view word, std::vector<TokenId>* ids) const;

  // Token string for an id of the model's vocabulary, or nullptr.
  const std::string* IdToToken(TokenId id) const;
  // Id of a token string, or -1.
  TokenId TokenToId(std::string_view token) const;
  // One past the largest id in the vocabulary.
  size_t VocabLimit() const { return id_to_token_.size(); }

  void ClearCache();

 private:
  BpeModel() = default;
  std::vector<TokenId> MergeWord(std::string_view word) const;

  struct MergeTarget {
    uint32_t rank;
    TokenId new_id;
  };
  static uint64_t PairKey(TokenId a, TokenId b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  absl::flat_hash_map<std::string, TokenId> vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> has_id_;
  absl::flat_hash_map<uint64_t, MergeTarget> merges_;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  TokenId unk_id_ = -1;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  TokenId byte_ids_[256];  // <0xNN> ids for byte_fallback, -1 if absent

  // Word -> ids. Bounded; when full, new words are simply not cached.
  static constexpr size_t kCacheCapacity = 1 << 16;
  static constexpr size_t kMaxCachedWordBytes = 256;
  mutable std::shared_mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<TokenId>> cache_;
};

}  // namespace gqa
