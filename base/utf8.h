// UTF-8, the one implementation every room uses: validation (Unicode
// Table 3-7: shortest form, no surrogates, at most U+10FFFF), code points,
// and Rust-style lossy decoding.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace gqa {

// Length in bytes of the valid UTF-8 character starting at s[i], or 0 if the
// bytes there are not a complete, valid, shortest-form scalar value.
int Utf8CharLen(std::string_view s, size_t i);

// Whether all of `s` is valid UTF-8.
bool IsUtf8(std::string_view s);

// OK if `s` is valid UTF-8; otherwise InvalidArgument naming the byte offset.
absl::Status ValidateUtf8(std::string_view s, std::string_view what);

// Appends the UTF-8 encoding of code point `cp` (must be a scalar value).
void AppendUtf8(uint32_t cp, std::string* out);

// Decodes the character at s[i] (s must be valid there); advances i.
uint32_t NextCodePoint(std::string_view s, size_t* i);

// Like Rust's String::from_utf8_lossy: each maximal invalid subpart becomes
// U+FFFD (the WHATWG / Unicode "substitution of maximal subparts" policy).
std::string Utf8Lossy(std::string_view bytes);

// Incremental form of Utf8Lossy: Push() returns the text that is final;
// an incomplete (but so far valid) trailing sequence is held until the next
// Push() or Finish(). Concatenated outputs equal Utf8Lossy(all bytes).
class Utf8LossyStream {
 public:
  std::string Push(std::string_view bytes);
  std::string Finish();

 private:
  std::string pending_;  // at most 3 bytes: a valid prefix of one character
};

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace gqa
