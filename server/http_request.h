// The JSON bodies of /v1/completions and /v1/chat/completions turned into
// an ApiRequest: field types, ranges and the chat template. Shared by the
// HTTP server and the request fuzzer (fuzz/), so that what is fuzzed is what
// is served.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/frontend.h"

namespace gqa::http_request {

using Json = nlohmann::json;

// Field readers: a wrong type is a 400 naming the field.
struct BadField {  // message "404:...": the model does not exist
  std::string field, message;
};

template <typename T>
T Get(const Json& j, const char* field, T fallback) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return fallback;
  if constexpr (std::is_same_v<T, bool>) {
    if (!it->is_boolean()) throw BadField{field, absl::StrCat("'", field, "' must be a boolean")};
  } else if constexpr (std::is_integral_v<T>) {
    if (!it->is_number_integer()) throw BadField{field, absl::StrCat("'", field, "' must be an integer")};
    const int64_t v = it->get<int64_t>();
    if (v < std::numeric_limits<T>::min() || v > std::numeric_limits<T>::max()) {
      throw BadField{field, absl::StrCat("'", field, "' is out of range")};
    }
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!it->is_number()) throw BadField{field, absl::StrCat("'", field, "' must be a number")};
  } else {
    if (!it->is_string()) throw BadField{field, absl::StrCat("'", field, "' must be a string")};
  }
  return it->get<T>();
}

// Non-negative int32 token ids of a JSON array; BadField otherwise.
std::vector<int32_t> TokenIds(const Json& v, const char* field);

// The fields /v1/completions and /v1/chat/completions share.
void ParseCommon(const Json& j, const ModelInfo& info, ApiRequest* r, bool* stream, bool* include_usage);

// Template variables a chat request may pass: `tools`, and the entries of
// `chat_template_kwargs` (e.g. enable_thinking), as vLLM accepts them.
Json ChatExtras(const Json& j);

struct GenerateBody {
  ApiRequest request;
  bool stream = false, include_usage = false;
  int logprobs = 0;
};

// A completions (chat = false) or chat completions body, already parsed as
// a JSON object. Throws BadField for a field the client got wrong; returns
// an error status for a prompt the chat template refuses.
absl::Status ParseGenerateBody(const Json& j, bool chat, const Frontend& fe, GenerateBody* out);

}  // namespace gqa::http_request
