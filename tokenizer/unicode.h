// Text helpers of the tokenizer on top of base/utf8.h: the GPT-2 byte <->
// printable-character map of byte-level BPE, and std::string_view to
// Debian's absl::string_view.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/strings/string_view.h"
#include "base/utf8.h"

namespace gqa {

// Debian's Abseil has its own string_view type; this adapts std::string_view.
inline absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// The GPT-2 byte-level map: every byte maps to one printable code point.
struct ByteLevelMap {
  std::array<uint32_t, 256> byte_to_cp;
  std::array<std::string, 256> byte_to_utf8;
  // Inverse, for code points < 512 (all of the map's range); -1 if unmapped.
  std::array<int16_t, 512> cp_to_byte;
};
const ByteLevelMap& GetByteLevelMap();

}  // namespace gqa
