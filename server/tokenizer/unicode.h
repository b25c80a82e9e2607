// UTF-8 helpers shared by the tokenizer: validation, code points, Rust-style
// lossy decoding, and the GPT-2 byte <-> printable-character map.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace gqa {

// Debian's Abseil has its own string_view type; this adapts std::string_view.
inline absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Length in bytes of the valid UTF-8 character starting at s[i], or 0 if the
// bytes there are not a complete, valid, shortest-form scalar value.
int Utf8CharLen(std::string_view s, size_t i);

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

// The GPT-2 byte-level map: every byte maps to one printable code point.
struct ByteLevelMap {
  std::array<uint32_t, 256> byte_to_cp;
  std::array<std::string, 256> byte_to_utf8;
  // Inverse, for code points < 512 (all of the map's range); -1 if unmapped.
  std::array<int16_t, 512> cp_to_byte;
};
const ByteLevelMap& GetByteLevelMap();

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace gqa
