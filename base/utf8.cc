// UTF-8: see utf8.h.
#include "base/utf8.h"

#include "absl/strings/str_cat.h"

namespace gqa {
namespace {

// Length of the longest prefix of s[i..] that is a valid beginning of a UTF-8
// sequence (Unicode Table 3-7), and the full length the lead byte announces.
// Returns {valid_prefix_len, needed_len}; needed_len 0 for an invalid lead.
struct Prefix {
  int valid;
  int needed;
};

Prefix ValidPrefix(std::string_view s, size_t i) {
  const auto b0 = static_cast<uint8_t>(s[i]);
  if (b0 < 0x80) return {1, 1};
  int needed;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range for the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    needed = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    needed = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    needed = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return {0, 0};
  }
  int valid = 1;
  for (int k = 1; k < needed; ++k) {
    if (i + k >= s.size()) break;
    const auto b = static_cast<uint8_t>(s[i + k]);
    const uint8_t l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (b < l || b > h) break;
    ++valid;
  }
  return {valid, needed};
}

}  // namespace

int Utf8CharLen(std::string_view s, size_t i) {
  if (i >= s.size()) return 0;
  const Prefix p = ValidPrefix(s, i);
  return p.needed != 0 && p.valid == p.needed ? p.needed : 0;
}

namespace {
// The offset of the first byte that does not begin a valid character, or
// s.size() when all of s is UTF-8.
size_t FirstInvalidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const int n = Utf8CharLen(s, i);
    if (n == 0) return i;
    i += n;
  }
  return i;
}
}  // namespace

bool IsUtf8(std::string_view s) { return FirstInvalidUtf8(s) == s.size(); }

absl::Status ValidateUtf8(std::string_view s, std::string_view what) {
  const size_t i = FirstInvalidUtf8(s);
  if (i == s.size()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(absl::string_view(what.data(), what.size()),
                                                 " is not valid UTF-8 (bad byte 0x",
                                                 absl::Hex(static_cast<uint8_t>(s[i]), absl::kZeroPad2),
                                                 " at byte offset ", i, ")"));
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

uint32_t NextCodePoint(std::string_view s, size_t* i) {
  const auto b0 = static_cast<uint8_t>(s[*i]);
  if (b0 < 0x80) {
    ++*i;
    return b0;
  }
  int n = b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : 2;
  uint32_t cp = b0 & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07);
  for (int k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<uint8_t>(s[*i + k]) & 0x3F);
  *i += n;
  return cp;
}

std::string Utf8Lossy(std::string_view bytes) {
  Utf8LossyStream stream;
  std::string out = stream.Push(bytes);
  out += stream.Finish();
  return out;
}

std::string Utf8LossyStream::Push(std::string_view bytes) {
  std::string buf = pending_;
  buf.append(bytes);
  pending_.clear();
  std::string out;
  out.reserve(buf.size());
  size_t i = 0;
  while (i < buf.size()) {
    const auto b = static_cast<uint8_t>(buf[i]);
    if (b < 0x80) {
      out.push_back(static_cast<char>(b));
      ++i;
      continue;
    }
    const Prefix p = ValidPrefix(buf, i);
    if (p.needed != 0 && p.valid == p.needed) {
      out.append(buf, i, p.needed);
      i += p.needed;
    } else if (p.needed != 0 && i + p.valid == buf.size()) {
      pending_ = buf.substr(i);  // may still be completed by later bytes
      break;
    } else {
      out.append(kReplacementChar);  // one per maximal invalid subpart
      i += p.valid == 0 ? 1 : p.valid;
    }
  }
  return out;
}

std::string Utf8LossyStream::Finish() {
  if (pending_.empty()) return "";
  pending_.clear();
  return std::string(kReplacementChar);
}

}  // namespace gqa
