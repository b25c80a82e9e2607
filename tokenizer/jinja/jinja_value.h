// Values of the Jinja-subset interpreter used for chat templates, with the
// Python semantics jinja2 gives them (truthiness, str(), ==, json.dumps).
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace gqa::jinja {

class Value;

// The longest string a template may build or print (32 MiB: well above any
// prompt that fits a request body).
inline constexpr size_t kMaxStringBytes = size_t{32} << 20;
// The deepest list / dict nesting a template may build (request values nest
// at most 64 levels, the body limit).
inline constexpr int kMaxValueDepth = 128;
// The most items a template may put in one list or dict.
inline constexpr size_t kMaxItems = size_t{1} << 20;
using List = std::vector<Value>;
// Insertion-ordered string-keyed map (Python dicts keep insertion order).
using Dict = std::vector<std::pair<std::string, Value>>;

class Value {
 public:
  enum class Type { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kNamespace };

  Value() = default;  // undefined
  static Value None() { Value v; v.type_ = Type::kNone; return v; }
  static Value Bool(bool b) { Value v; v.type_ = Type::kBool; v.i_ = b; return v; }
  static Value Int(int64_t i) { Value v; v.type_ = Type::kInt; v.i_ = i; return v; }
  static Value Float(double d) { Value v; v.type_ = Type::kFloat; v.f_ = d; return v; }
  static Value Str(std::string s) { Value v; v.type_ = Type::kString; v.s_ = std::make_shared<std::string>(std::move(s)); return v; }
  static Value MakeList(List l) {
    Value v;
    v.type_ = Type::kList;
    for (const Value& e : l) v.depth_ = std::max(v.depth_, e.depth_ + 1);
    if (v.depth_ == 0) v.depth_ = 1;
    v.l_ = std::make_shared<List>(std::move(l));
    return v;
  }
  // A Python tuple (from dict.items(), dictsort): a list that prints as (a, b).
  static Value MakeTuple(List l) { Value v = MakeList(std::move(l)); v.i_ = 1; return v; }
  bool is_tuple() const { return type_ == Type::kList && i_ == 1; }
  static Value MakeDict(Dict d) {
    Value v;
    v.type_ = Type::kDict;
    for (const auto& [k, e] : d) v.depth_ = std::max(v.depth_, e.depth_ + 1);
    if (v.depth_ == 0) v.depth_ = 1;
    v.d_ = std::make_shared<Dict>(std::move(d));
    return v;
  }
  static Value MakeNamespace(Dict d) { Value v = MakeDict(std::move(d)); v.type_ = Type::kNamespace; return v; }
  // Undefined that remembers what was looked up, for error messages.
  static Value Undefined(std::string name) { Value v; v.s_ = std::make_shared<std::string>(std::move(name)); return v; }
  static Value FromJson(const nlohmann::ordered_json& j);

  Type type() const { return type_; }
  // Nesting of lists and dicts ([] is 1, a scalar 0), counted when built;
  // namespaces are not walked into (printed as <Namespace>, not JSON).
  int depth() const { return depth_; }
  bool is_undefined() const { return type_ == Type::kUndefined; }
  bool is_none() const { return type_ == Type::kNone; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_number() const { return type_ == Type::kInt || type_ == Type::kFloat || type_ == Type::kBool; }
  bool is_list() const { return type_ == Type::kList; }
  bool is_mapping() const { return type_ == Type::kDict || type_ == Type::kNamespace; }

  bool AsBool() const { return i_ != 0; }
  int64_t AsInt() const { return type_ == Type::kFloat ? static_cast<int64_t>(f_) : i_; }
  double AsDouble() const { return type_ == Type::kFloat ? f_ : static_cast<double>(i_); }
  const std::string& AsString() const { return *s_; }
  const List& AsList() const { return *l_; }
  const Dict& AsDict() const { return *d_; }
  Dict& MutableDict() const { return *d_; }  // namespaces only
  const std::string& undefined_name() const { static const std::string kEmpty; return s_ ? *s_ : kEmpty; }

  // Key lookup in a mapping; nullptr if absent.
  const Value* Find(std::string_view key) const;

  bool Truthy() const;
  // Python str(); Undefined prints as "".
  std::string Str() const;
  // Python repr() (used inside str() of lists and dicts).
  std::string Repr() const;
  // json.dumps(v, ensure_ascii=False, indent=indent) (indent < 0: None).
  absl::StatusOr<std::string> ToJson(int indent) const;
  const char* TypeName() const;

 private:
  Type type_ = Type::kUndefined;
  int depth_ = 0;
  int64_t i_ = 0;
  double f_ = 0;
  std::shared_ptr<std::string> s_;
  std::shared_ptr<List> l_;
  std::shared_ptr<Dict> d_;
};

bool Equal(const Value& a, const Value& b);
// Python float repr (shortest round-trip, 'r' format).
std::string PyFloatRepr(double d);
// Code-point helpers for Python string semantics.
std::vector<std::string_view> CodePoints(std::string_view s);
bool PyIsSpace(uint32_t cp);

}  // namespace gqa::jinja
