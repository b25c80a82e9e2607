// Token ids (little-endian uint32, any value) pushed one by one through the
// streaming detokenizer. Unknown ids are refused; the text of the accepted
// ids, streamed plus Finish(), must equal a one-shot decode of them.
#include <cstring>
#include <vector>

#include "fuzz/fuzz_server.h"
#include "fuzz/fuzz_util.h"
#include "tokenizer/detokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::unique_ptr<gqa::Tokenizer> tok = gqa::fuzz::LoadTokenizer();
  if (size < 1) return 0;
  const bool skip_special = data[0] % 2 == 1;
  gqa::StreamDetokenizer stream(*tok, skip_special);
  std::vector<gqa::TokenId> accepted;
  std::string text;
  for (size_t at = 1; at + 4 <= size; at += 4) {
    uint32_t v;
    std::memcpy(&v, data + at, 4);
    // Mostly ids near the vocabulary (some past its end), sometimes any value.
    const gqa::TokenId id = (v >> 31) ? gqa::TokenId(v) : gqa::TokenId(v % 160000);
    auto piece = stream.Push(id);
    if (!piece.ok()) continue;
    accepted.push_back(id);
    text += *piece;
  }
  text += stream.Finish();
  auto whole = tok->Decode(accepted, skip_special);
  GQA_FUZZ_CHECK(whole.ok());
  GQA_FUZZ_CHECK(text == *whole);
  return 0;
}
