// tokenizer.json (and, after a NUL byte, tokenizer_config.json) from
// untrusted bytes: refused with a status, or a tokenizer that encodes and
// decodes a fixed text without crashing.
#include "fuzz/fuzz_util.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view all = gqa::fuzz::AsText(data, size);
  const size_t nul = all.find('\0');
  const std::string_view tok = all.substr(0, nul);
  const std::string_view cfg = nul == std::string_view::npos ? std::string_view() : all.substr(nul + 1);
  auto t = gqa::Tokenizer::FromJson(tok, cfg);
  if (!t.ok()) return 0;
  auto ids = (*t)->Encode("Hello wörld! 123 <s> \t\n 日本語");
  if (ids.ok()) (void)(*t)->Decode(*ids);
  return 0;
}
