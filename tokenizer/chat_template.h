// Chat templates: compiles the Jinja chat_template of tokenizer_config.json
// once (unsupported constructs fail here, at model load) and renders it the
// way transformers' apply_chat_template does.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "tokenizer/jinja/jinja_ast.h"

namespace gqa {

class ChatTemplate {
 public:
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> Compile(std::string_view source);

  // `vars` is the template's context: "messages", and as needed "tools",
  // "add_generation_prompt", "bos_token", "eos_token", or any extra
  // variable (e.g. "enable_thinking"). A raise_exception() in the template
  // comes back as InvalidArgument carrying its message.
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& vars) const;

 private:
  ChatTemplate() = default;
  jinja::Body body_;
};

}  // namespace gqa
