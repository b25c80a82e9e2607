// The byte-level map: see unicode.h.
#include "tokenizer/unicode.h"

namespace gqa {

const ByteLevelMap& GetByteLevelMap() {
  static const ByteLevelMap map = [] {
    ByteLevelMap m;
    m.cp_to_byte.fill(-1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const uint32_t cp = printable ? b : 256 + extra++;
      m.byte_to_cp[b] = cp;
      m.byte_to_utf8[b].clear();
      AppendUtf8(cp, &m.byte_to_utf8[b]);
      m.cp_to_byte[cp] = static_cast<int16_t>(b);
    }
    return m;
  }();
  return map;
}

}  // namespace gqa
