// tokenizer.json "normalizer" components: NFC, Prepend, Replace, Sequence.
// Normalizers run on each piece of input text that is not an added token.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace gqa {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // `text` is valid UTF-8; the result is valid UTF-8.
  virtual std::string Normalize(std::string_view text) const = 0;
};

// Builds a normalizer from its JSON; a null JSON gives nullptr (no-op).
// Unsupported types are an error naming the component.
absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(const nlohmann::json& j);

}  // namespace gqa
