// tokenizer.json "pre_tokenizer" components: Split (PCRE2 regex or literal),
// ByteLevel (GPT-2 byte map, optional GPT-2 regex), Metaspace, Sequence.
// A pre-tokenizer turns one normalized piece into the words BPE runs on.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace gqa {

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces `pieces` by their refinement. `first_piece` says whether
  // pieces[0] starts the input (Metaspace's prepend_scheme "first"). Fails
  // only if the regex engine gives up (resource limits).
  virtual absl::Status Apply(std::vector<std::string>* pieces, bool first_piece) const = 0;
};

// Null JSON gives nullptr (the whole piece is one word).
absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(const nlohmann::json& j);

// A compiled PCRE2 pattern (UTF + UCP, JIT when available), thread-safe.
class Regex {
 public:
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(std::string_view pattern, bool literal);
  ~Regex();
  // Appends the [begin, end) byte spans of all non-overlapping matches.
  absl::Status FindAll(std::string_view text, std::vector<std::pair<size_t, size_t>>* spans) const;

 private:
  Regex() = default;
  void* code_ = nullptr;  // pcre2_code_8*
};

}  // namespace gqa
