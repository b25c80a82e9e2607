// Filters, tests, global functions and methods of the Jinja subset, with the
// behaviour of jinja2 / Python (and transformers' tojson and raise_exception).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "tokenizer/jinja/jinja_value.h"

namespace gqa::jinja {

using Kwargs = std::vector<std::pair<std::string, Value>>;

bool IsKnownFilter(std::string_view name);
bool IsKnownTest(std::string_view name);
bool IsKnownMethod(std::string_view name);
bool IsKnownFunction(std::string_view name);

absl::StatusOr<Value> ApplyFilter(std::string_view name, const Value& v, const std::vector<Value>& args, const Kwargs& kwargs);
absl::StatusOr<bool> ApplyTest(std::string_view name, const Value& v, const std::vector<Value>& args);
absl::StatusOr<Value> CallMethod(const Value& obj, std::string_view name, const std::vector<Value>& args, const Kwargs& kwargs);
absl::StatusOr<Value> CallFunction(std::string_view name, const std::vector<Value>& args, const Kwargs& kwargs);

// Python semantics shared with the evaluator.
absl::StatusOr<Value> Subscript(const Value& obj, const Value& key);  // obj[key], Undefined if missing
absl::StatusOr<Value> Slice(const Value& obj, const Value& start, const Value& stop, const Value& step);
absl::StatusOr<std::vector<Value>> Iterate(const Value& v);  // for-loop items
absl::StatusOr<int64_t> Length(const Value& v);
std::string PyStrip(std::string_view s, int which, const Value& chars);  // which: 0 both, 1 left, 2 right

}  // namespace gqa::jinja
