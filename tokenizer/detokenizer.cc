// StreamDetokenizer: the decoder pipeline of decoder.h, fed one token at a time.
#include "tokenizer/detokenizer.h"

#include "absl/strings/str_cat.h"

namespace gqa {

absl::StatusOr<std::string> StreamDetokenizer::Push(TokenId id) {
  const std::string* t = tok_.IdToToken(id);
  if (t == nullptr) return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is not in the vocabulary"));
  if (skip_special_ && tok_.IsSpecial(id)) return std::string();
  return stream_.Push({*t});
}

std::string StreamDetokenizer::Finish() { return stream_.Finish(); }

}  // namespace gqa
