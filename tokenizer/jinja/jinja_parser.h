// Lexer and parser for the Jinja subset (jinja2 with trim_blocks=True and
// lstrip_blocks=True, as transformers' apply_chat_template configures it).
// Anything outside the subset is a parse error that names the construct.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "tokenizer/jinja/jinja_ast.h"

namespace gqa::jinja {

absl::StatusOr<Body> Parse(std::string_view source);

}  // namespace gqa::jinja
