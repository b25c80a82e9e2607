// Incremental detokenizer for token streams: Push() one id at a time and get
// the new text. Never emits a partial UTF-8 character; concatenated outputs
// (plus Finish()) equal Tokenizer::Decode of all ids.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "tokenizer/tokenizer.h"

namespace gqa {

class StreamDetokenizer {
 public:
  StreamDetokenizer(const Tokenizer& tok, bool skip_special_tokens)
      : tok_(tok), skip_special_(skip_special_tokens), stream_(tok.decoder().NewStream()) {}

  // Unknown ids are InvalidArgument (the stream is unchanged).
  absl::StatusOr<std::string> Push(TokenId id);
  // Text held back at the end (e.g. an incomplete UTF-8 sequence as U+FFFD).
  std::string Finish();

 private:
  const Tokenizer& tok_;
  bool skip_special_;
  DecoderSpec::Stream stream_;
};

}  // namespace gqa
