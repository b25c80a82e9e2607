// Nesting depth of JSON text, found without recursion: nlohmann's parser
// and every walk over its values recurse once per level, so text from a
// file or a request is checked against a fixed limit before it is parsed.
#ifndef GQA_WORKER_JSON_DEPTH_H_
#define GQA_WORKER_JSON_DEPTH_H_

#include <cstddef>
#include <string_view>

namespace gqa {

// The deepest nesting any JSON the project reads may have ({} is depth 1).
inline constexpr int kMaxJsonDepth = 64;

// True when arrays and objects nest deeper than `limit` in `text`; brackets
// inside strings do not count. Malformed text is left to the parser.
inline bool JsonDeeperThan(std::string_view text, int limit = kMaxJsonDepth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character cannot end the string
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return true;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return false;
}

}  // namespace gqa

#endif  // GQA_WORKER_JSON_DEPTH_H_
