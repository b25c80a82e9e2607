// Jinja builtins: see jinja_builtins.h.
#include "tokenizer/jinja/jinja_builtins.h"

#include <algorithm>
#include <cmath>
#include <ctime>

#include <unicode/locid.h>
#include <unicode/unistr.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tokenizer/unicode.h"

namespace gqa::jinja {
namespace {

constexpr std::string_view kFilters[] = {
    "trim", "length", "count", "tojson", "string", "upper", "lower", "capitalize", "title", "first", "last",
    "join", "default", "d", "list", "reverse", "replace", "items", "int", "float", "abs", "safe", "e", "escape",
    "map", "selectattr", "rejectattr", "select", "reject", "round", "sum", "unique", "min", "max", "dictsort",
    "indent"};
constexpr std::string_view kTests[] = {
    "defined", "undefined", "none", "boolean", "false", "true", "integer", "float", "number", "string", "mapping",
    "iterable", "sequence", "even", "odd", "divisibleby", "eq", "equalto", "==", "ne", "!=", "lt", "<", "le", "<=",
    "gt", ">", "ge", ">=", "in", "sameas", "lower", "upper"};
constexpr std::string_view kMethods[] = {
    "strip", "lstrip", "rstrip", "split", "rsplit", "startswith", "endswith", "upper", "lower", "title",
    "capitalize", "replace", "find", "count", "join", "splitlines", "isdigit", "isalpha", "isspace", "isalnum",
    "removeprefix", "removesuffix", "items", "keys", "values", "get"};
constexpr std::string_view kFunctions[] = {"raise_exception", "namespace", "range", "dict", "strftime_now"};

template <size_t N>
bool In(const std::string_view (&set)[N], std::string_view name) {
  return std::find(std::begin(set), std::end(set), name) != std::end(set);
}

absl::Status TypeError(std::string_view msg) { return absl::InvalidArgumentError(AV(msg)); }

const Value* Arg(const std::vector<Value>& args, const Kwargs& kwargs, size_t pos, std::string_view name) {
  if (pos < args.size()) return &args[pos];
  for (const auto& [k, v] : kwargs)
    if (k == name) return &v;
  return nullptr;
}

absl::StatusOr<std::string> StrArg(const Value* v, std::string_view what) {
  if (v == nullptr || !v->is_string()) return TypeError(absl::StrCat(AV(what), " must be a string"));
  return v->AsString();
}

std::string CaseMap(const std::string& s, int how) {  // 0 upper, 1 lower
  bool ascii = true;
  for (unsigned char c : s) ascii &= c < 0x80;
  if (ascii) {
    std::string out = s;
    for (char& c : out) c = how == 0 ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
  }
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(s);
  if (how == 0) u.toUpper(icu::Locale::getRoot());
  else u.toLower(icu::Locale::getRoot());
  std::string out;
  u.toUTF8String(out);
  return out;
}

bool IsAlnumCp(std::string_view ch) { return ch.size() > 1 || std::isalnum(static_cast<unsigned char>(ch[0])); }

std::string Capitalize(const std::string& s) {
  auto cps = CodePoints(s);
  if (cps.empty()) return "";
  std::string rest;
  for (size_t k = 1; k < cps.size(); ++k) rest += cps[k];
  return CaseMap(std::string(cps[0]), 0) + CaseMap(rest, 1);
}

std::string Title(const std::string& s) {
  std::string out;
  bool prev_cased = false;
  for (std::string_view ch : CodePoints(s)) {
    const bool cased = IsAlnumCp(ch) && !(ch.size() == 1 && std::isdigit(static_cast<unsigned char>(ch[0])));
    out += cased ? CaseMap(std::string(ch), prev_cased ? 1 : 0) : std::string(ch);
    prev_cased = cased;
  }
  return out;
}

std::vector<Value> PySplit(const std::string& s, const Value* sep, int64_t maxsplit) {
  std::vector<Value> out;
  if (sep == nullptr || sep->is_none()) {
    size_t i = 0;
    auto skip_ws = [&] {
      while (i < s.size()) {
        size_t j = i;
        if (!PyIsSpace(NextCodePoint(s, &j))) break;
        i = j;
      }
    };
    skip_ws();
    while (i < s.size()) {
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
        std::string rest = s.substr(i);
        out.push_back(Value::Str(PyStrip(rest, 2, Value())));
        return out;
      }
      size_t b = i;
      while (i < s.size()) {
        size_t j = i;
        if (PyIsSpace(NextCodePoint(s, &j))) break;
        i = j;
      }
      out.push_back(Value::Str(s.substr(b, i - b)));
      skip_ws();
    }
    return out;
  }
  const std::string& d = sep->AsString();
  size_t b = 0;
  while (true) {
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) break;
    size_t p = s.find(d, b);
    if (p == std::string::npos) break;
    out.push_back(Value::Str(s.substr(b, p - b)));
    b = p + d.size();
  }
  out.push_back(Value::Str(s.substr(b)));
  return out;
}

std::string HtmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

absl::StatusOr<bool> Less(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) return a.AsDouble() < b.AsDouble();
  if (a.is_string() && b.is_string()) return a.AsString() < b.AsString();
  return TypeError(absl::StrCat("'<' not supported between '", a.TypeName(), "' and '", b.TypeName(), "'"));
}

}  // namespace

bool IsKnownFilter(std::string_view n) { return In(kFilters, n); }
bool IsKnownTest(std::string_view n) { return In(kTests, n); }
bool IsKnownMethod(std::string_view n) { return In(kMethods, n); }
bool IsKnownFunction(std::string_view n) { return In(kFunctions, n); }

std::string PyStrip(std::string_view s, int which, const Value& chars) {
  auto cps = CodePoints(s);
  auto strip_it = [&](std::string_view ch) {
    if (chars.is_string()) return chars.AsString().find(ch) != std::string::npos;
    size_t j = 0;
    return PyIsSpace(NextCodePoint(ch, &j));
  };
  size_t b = 0, e = cps.size();
  if (which != 2) while (b < e && strip_it(cps[b])) ++b;
  if (which != 1) while (e > b && strip_it(cps[e - 1])) --e;
  std::string out;
  for (size_t k = b; k < e; ++k) out += cps[k];
  return out;
}

absl::StatusOr<int64_t> Length(const Value& v) {
  switch (v.type()) {
    case Value::Type::kUndefined: return 0;
    case Value::Type::kString: return static_cast<int64_t>(CodePoints(v.AsString()).size());
    case Value::Type::kList: return static_cast<int64_t>(v.AsList().size());
    case Value::Type::kDict:
    case Value::Type::kNamespace: return static_cast<int64_t>(v.AsDict().size());
    default: return TypeError(absl::StrCat("object of type '", v.TypeName(), "' has no len()"));
  }
}

absl::StatusOr<std::vector<Value>> Iterate(const Value& v) {
  switch (v.type()) {
    case Value::Type::kUndefined: return std::vector<Value>();
    case Value::Type::kList: return v.AsList();
    case Value::Type::kDict: {
      std::vector<Value> keys;
      for (const auto& [k, _] : v.AsDict()) keys.push_back(Value::Str(k));
      return keys;
    }
    case Value::Type::kString: {
      std::vector<Value> chars;
      for (auto ch : CodePoints(v.AsString())) chars.push_back(Value::Str(std::string(ch)));
      return chars;
    }
    default: return TypeError(absl::StrCat("'", v.TypeName(), "' object is not iterable"));
  }
}

absl::StatusOr<Value> Subscript(const Value& obj, const Value& key) {
  if (obj.is_mapping()) {
    if (!key.is_string()) return Value::Undefined("item");
    const Value* v = obj.Find(key.AsString());
    return v ? *v : Value::Undefined(key.AsString());
  }
  if (obj.is_list() || obj.is_string()) {
    if (key.type() != Value::Type::kInt && key.type() != Value::Type::kBool) return Value::Undefined("item");
    int64_t i = key.AsInt();
    if (obj.is_list()) {
      const int64_t n = static_cast<int64_t>(obj.AsList().size());
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value::Undefined("index");
      return obj.AsList()[i];
    }
    auto cps = CodePoints(obj.AsString());
    const int64_t n = static_cast<int64_t>(cps.size());
    if (i < 0) i += n;
    if (i < 0 || i >= n) return Value::Undefined("index");
    return Value::Str(std::string(cps[i]));
  }
  if (obj.is_undefined()) return TypeError(absl::StrCat("'", obj.undefined_name(), "' is undefined"));
  return Value::Undefined("item");
}

absl::StatusOr<Value> Slice(const Value& obj, const Value& start, const Value& stop, const Value& step) {
  std::vector<Value> items;
  std::vector<std::string_view> cps;
  int64_t n;
  if (obj.is_list()) n = obj.AsList().size();
  else if (obj.is_string()) { cps = CodePoints(obj.AsString()); n = cps.size(); }
  else return TypeError(absl::StrCat("'", obj.TypeName(), "' object is not subscriptable"));
  const int64_t st = step.is_none() || step.is_undefined() ? 1 : step.AsInt();
  if (st == 0) return TypeError("slice step cannot be zero");
  auto norm = [&](const Value& v, int64_t def, bool is_start) -> int64_t {
    if (v.is_none() || v.is_undefined()) return def;
    int64_t x = v.AsInt();
    if (x < 0) x += n;
    if (st > 0) return std::clamp<int64_t>(x, 0, n);
    return std::clamp<int64_t>(x, -1, n - 1);
  };
  const int64_t b = norm(start, st > 0 ? 0 : n - 1, true), e = norm(stop, st > 0 ? n : -1, false);
  std::vector<int64_t> idx;
  if (st > 0) for (int64_t i = b; i < e; i += st) idx.push_back(i);
  else for (int64_t i = b; i > e; i += st) idx.push_back(i);
  if (obj.is_list()) {
    List out;
    for (int64_t i : idx) out.push_back(obj.AsList()[i]);
    return Value::MakeList(std::move(out));
  }
  std::string out;
  for (int64_t i : idx) out += cps[i];
  return Value::Str(std::move(out));
}

absl::StatusOr<bool> ApplyTest(std::string_view name, const Value& v, const std::vector<Value>& args) {
  auto arg0 = [&]() -> const Value& { static const Value kU; return args.empty() ? kU : args[0]; };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.type() == Value::Type::kBool;
  if (name == "false") return v.type() == Value::Type::kBool && !v.AsBool();
  if (name == "true") return v.type() == Value::Type::kBool && v.AsBool();
  if (name == "integer") return v.type() == Value::Type::kInt;
  if (name == "float") return v.type() == Value::Type::kFloat;
  if (name == "number") return v.is_number();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.type() == Value::Type::kDict;
  if (name == "iterable") return v.is_list() || v.is_string() || v.type() == Value::Type::kDict || v.is_undefined();
  if (name == "sequence") return v.is_list() || v.is_string() || v.type() == Value::Type::kDict;
  if (name == "even" || name == "odd") {
    if (v.type() != Value::Type::kInt) return TypeError(absl::StrCat("'", AV(name), "' test needs an integer"));
    return (v.AsInt() % 2 == 0) == (name == "even");
  }
  if (name == "divisibleby") {
    if (!arg0().is_number() || arg0().AsInt() == 0) return TypeError("divisibleby needs a non-zero number");
    return v.AsInt() % arg0().AsInt() == 0;
  }
  if (name == "eq" || name == "equalto" || name == "==") return Equal(v, arg0());
  if (name == "ne" || name == "!=") return !Equal(v, arg0());
  if (name == "lt" || name == "<") return Less(v, arg0());
  if (name == "gt" || name == ">") return Less(arg0(), v);
  if (name == "le" || name == "<=") { auto r = Less(arg0(), v); if (!r.ok()) return r; return !*r; }
  if (name == "ge" || name == ">=") { auto r = Less(v, arg0()); if (!r.ok()) return r; return !*r; }
  if (name == "in") {
    auto items = Iterate(arg0());
    if (!items.ok()) return items.status();
    if (arg0().is_string()) return v.is_string() && arg0().AsString().find(v.AsString()) != std::string::npos;
    for (const Value& x : *items) if (Equal(x, v)) return true;
    return false;
  }
  if (name == "sameas") {
    if (v.type() != arg0().type()) return false;
    if (v.is_none() || v.is_undefined()) return true;
    if (v.type() == Value::Type::kBool) return v.AsBool() == arg0().AsBool();
    return false;
  }
  if (name == "lower") return v.is_string() && CaseMap(v.AsString(), 1) == v.AsString();
  if (name == "upper") return v.is_string() && CaseMap(v.AsString(), 0) == v.AsString();
  return TypeError(absl::StrCat("unknown test '", AV(name), "'"));
}

absl::StatusOr<Value> ApplyFilter(std::string_view name, const Value& v, const std::vector<Value>& args, const Kwargs& kwargs) {
  if (name == "trim") {
    const Value* chars = Arg(args, kwargs, 0, "chars");
    if (!v.is_string()) return Value::Str(PyStrip(v.Str(), 0, chars ? *chars : Value()));
    return Value::Str(PyStrip(v.AsString(), 0, chars ? *chars : Value()));
  }
  if (name == "length" || name == "count") {
    auto n = Length(v);
    if (!n.ok()) return n.status();
    return Value::Int(*n);
  }
  if (name == "tojson") {
    for (const auto& [k, x] : kwargs) {
      if (k == "indent") continue;
      if (k == "ensure_ascii" || k == "sort_keys") {
        if (x.Truthy()) return TypeError(absl::StrCat("tojson: ", k, "=True is not supported"));
        continue;
      }
      return TypeError(absl::StrCat("tojson: unsupported argument '", k, "'"));
    }
    const Value* indent = Arg(args, kwargs, 99, "indent");
    if (!args.empty()) return TypeError("tojson: positional arguments are not supported");
    if (indent && indent->type() == Value::Type::kInt && indent->AsInt() > 64) return TypeError("tojson: indent above 64");
    auto s = v.ToJson(indent && indent->type() == Value::Type::kInt ? static_cast<int>(indent->AsInt()) : -1);
    if (!s.ok()) return s.status();
    return Value::Str(*s);
  }
  if (name == "string") return Value::Str(v.Str());
  if (name == "upper") return Value::Str(CaseMap(v.Str(), 0));
  if (name == "lower") return Value::Str(CaseMap(v.Str(), 1));
  if (name == "capitalize") return Value::Str(Capitalize(v.Str()));
  if (name == "title") return Value::Str(Title(v.Str()));
  if (name == "first" || name == "last") {
    auto items = Iterate(v);
    if (!items.ok()) return items.status();
    if (items->empty()) return Value::Undefined(std::string(name));
    return name == "first" ? items->front() : items->back();
  }
  if (name == "join") {
    auto items = Iterate(v);
    if (!items.ok()) return items.status();
    const Value* sep = Arg(args, kwargs, 0, "d");
    const Value* attr = Arg(args, kwargs, 1, "attribute");
    std::vector<std::string> parts;
    const std::string separator = sep ? sep->Str() : "";
    size_t total = 0;
    for (const Value& x : *items) {
      if (attr) {
        auto y = Subscript(x, *attr);
        if (!y.ok()) return y.status();
        parts.push_back(y->Str());
      } else {
        parts.push_back(x.Str());
      }
      total += parts.back().size() + separator.size();
      if (total > kMaxStringBytes) return TypeError("join: the result is longer than the string limit");
    }
    return Value::Str(absl::StrJoin(parts, separator));
  }
  if (name == "default" || name == "d") {
    const Value* def = Arg(args, kwargs, 0, "default_value");
    const Value* boolean = Arg(args, kwargs, 1, "boolean");
    const bool use_default = v.is_undefined() || (boolean && boolean->Truthy() && !v.Truthy());
    return use_default ? (def ? *def : Value::Str("")) : v;
  }
  if (name == "list") {
    auto items = Iterate(v);
    if (!items.ok()) return items.status();
    return Value::MakeList(std::move(*items));
  }
  if (name == "reverse") {
    if (v.is_string()) return Slice(v, Value::None(), Value::None(), Value::Int(-1));
    auto items = Iterate(v);
    if (!items.ok()) return items.status();
    std::reverse(items->begin(), items->end());
    return Value::MakeList(std::move(*items));
  }
  if (name == "replace") {
    std::vector<Value> a = args;
    return CallMethod(Value::Str(v.Str()), "replace", a, kwargs);
  }
  if (name == "items") {
    if (v.is_undefined()) return Value::MakeList({});
    return CallMethod(v, "items", {}, {});
  }
  if (name == "int") {
    if (v.is_number()) return Value::Int(v.AsInt());
    if (v.is_string()) {
      try { return Value::Int(std::stoll(PyStrip(v.AsString(), 0, Value()))); } catch (...) {}
    }
    const Value* def = Arg(args, kwargs, 0, "default");
    return def ? *def : Value::Int(0);
  }
  if (name == "float") {
    if (v.is_number()) return Value::Float(v.AsDouble());
    if (v.is_string()) {
      try { return Value::Float(std::stod(v.AsString())); } catch (...) {}
    }
    const Value* def = Arg(args, kwargs, 0, "default");
    return def ? *def : Value::Float(0.0);
  }
  if (name == "abs") {
    if (v.type() == Value::Type::kFloat) return Value::Float(std::fabs(v.AsDouble()));
    if (v.is_number()) return Value::Int(std::llabs(v.AsInt()));
    return TypeError("abs needs a number");
  }
  if (name == "round") {
    if (!v.is_number()) return TypeError("round needs a number");
    const Value* prec = Arg(args, kwargs, 0, "precision");
    const double p = std::pow(10.0, prec ? static_cast<double>(prec->AsInt()) : 0.0);
    return Value::Float(std::round(v.AsDouble() * p) / p);
  }
  if (name == "safe") return v;
  if (name == "e" || name == "escape") return Value::Str(HtmlEscape(v.Str()));
  if (name == "map" || name == "selectattr" || name == "rejectattr" || name == "select" || name == "reject") {
    auto items = Iterate(v);
    if (!items.ok()) return items.status();
    List out;
    if (name == "map") {
      const Value* attr = Arg(args, kwargs, 99, "attribute");
      for (const Value& x : *items) {
        if (attr) {
          auto y = Subscript(x, *attr);
          if (!y.ok()) return y.status();
          const Value* def = Arg({}, kwargs, 99, "default");
          out.push_back(y->is_undefined() && def ? *def : *y);
        } else {
          if (args.empty() || !args[0].is_string()) return TypeError("map needs attribute= or a filter name");
          std::vector<Value> rest(args.begin() + 1, args.end());
          auto y = ApplyFilter(args[0].AsString(), x, rest, {});
          if (!y.ok()) return y.status();
          out.push_back(*y);
        }
      }
      return Value::MakeList(std::move(out));
    }
    const bool by_attr = name == "selectattr" || name == "rejectattr";
    const bool keep_if = name == "select" || name == "selectattr";
    size_t k = 0;
    Value attr;
    if (by_attr) {
      if (args.empty()) return TypeError(absl::StrCat(AV(name), " needs an attribute name"));
      attr = args[k++];
    }
    std::string test = k < args.size() && args[k].is_string() ? args[k].AsString() : "";
    std::vector<Value> targs(args.begin() + std::min(args.size(), k + 1), args.end());
    for (const Value& x : *items) {
      Value subject = x;
      if (by_attr) {
        auto y = Subscript(x, attr);
        if (!y.ok()) return y.status();
        subject = *y;
      }
      bool r;
      if (test.empty()) {
        r = subject.Truthy();
      } else {
        auto t = ApplyTest(test, subject, targs);
        if (!t.ok()) return t.status();
        r = *t;
      }
      if (r == keep_if) out.push_back(x);
    }
    return Value::MakeList(std::move(out));
  }
  if (name == "sum") {
    auto items = Iterate(v);
    if (!items.ok()) return items.status();
    bool is_float = false;
    double f = 0;
    int64_t i = 0;
    for (const Value& x : *items) {
      if (!x.is_number()) return TypeError("sum needs numbers");
      if (x.type() == Value::Type::kFloat) is_float = true;
      f += x.AsDouble();
      i += x.AsInt();
    }
    return is_float ? Value::Float(f) : Value::Int(i);
  }
  if (name == "unique") {
    auto items = Iterate(v);
    if (!items.ok()) return items.status();
    List out;
    for (const Value& x : *items) {
      bool seen = false;
      for (const Value& y : out) seen |= Equal(x, y);
      if (!seen) out.push_back(x);
    }
    return Value::MakeList(std::move(out));
  }
  if (name == "min" || name == "max") {
    auto items = Iterate(v);
    if (!items.ok()) return items.status();
    if (items->empty()) return Value::Undefined(std::string(name));
    Value best = (*items)[0];
    for (const Value& x : *items) {
      auto lt = name == "min" ? Less(x, best) : Less(best, x);
      if (!lt.ok()) return lt.status();
      if (*lt) best = x;
    }
    return best;
  }
  if (name == "dictsort") {
    if (v.type() != Value::Type::kDict) return TypeError("dictsort needs a dict");
    const Value* cs = Arg(args, kwargs, 0, "case_sensitive");
    const Value* by = Arg(args, kwargs, 1, "by");
    const Value* rev = Arg(args, kwargs, 2, "reverse");
    const bool by_value = by && by->is_string() && by->AsString() == "value";
    const bool case_sensitive = cs && cs->Truthy();
    std::vector<std::pair<std::string, Value>> items = v.AsDict();
    absl::Status error;
    auto key = [&](const std::pair<std::string, Value>& kv) -> Value {
      Value k = by_value ? kv.second : Value::Str(kv.first);
      if (k.is_string() && !case_sensitive) return Value::Str(CaseMap(k.AsString(), 1));
      return k;
    };
    std::stable_sort(items.begin(), items.end(), [&](const auto& x, const auto& y) {
      auto lt = Less(key(x), key(y));
      if (!lt.ok()) { error = lt.status(); return false; }
      return *lt;
    });
    if (!error.ok()) return error;
    if (rev && rev->Truthy()) std::reverse(items.begin(), items.end());
    List out;
    for (auto& [k, x] : items) out.push_back(Value::MakeTuple({Value::Str(k), x}));
    return Value::MakeList(std::move(out));
  }
  if (name == "indent") {
    const Value* width = Arg(args, kwargs, 0, "width");
    const Value* first = Arg(args, kwargs, 1, "first");
    const Value* blank = Arg(args, kwargs, 2, "blank");
    if (width && !width->is_string() && width->AsInt() > 1024) return TypeError("indent: width above 1024");
    const std::string pad = width && width->is_string() ? width->AsString()
                                                        : std::string(width ? static_cast<size_t>(std::max<int64_t>(0, width->AsInt())) : 4, ' ');
    const std::string s = v.Str();
    // jinja2: indent every line after the first (and the first with first=True);
    // empty lines only with blank=True. Lines split on "\n" as str.splitlines does for these texts.
    std::string out;
    size_t b = 0;
    bool is_first = true;
    while (true) {
      size_t e = s.find('\n', b);
      std::string line = s.substr(b, e == std::string::npos ? std::string::npos : e - b);
      const bool indent_it = (is_first ? (first && first->Truthy()) : true) && (!line.empty() || (blank && blank->Truthy()));
      if (indent_it) out += pad;
      out += line;
      if (out.size() > kMaxStringBytes) return TypeError("indent: the result is longer than the string limit");
      if (e == std::string::npos) break;
      out += '\n';
      b = e + 1;
      is_first = false;
    }
    return Value::Str(std::move(out));
  }
  return TypeError(absl::StrCat("unknown filter '", AV(name), "'"));
}

absl::StatusOr<Value> CallMethod(const Value& obj, std::string_view name, const std::vector<Value>& args, const Kwargs& kwargs) {
  if (obj.is_string()) {
    const std::string& s = obj.AsString();
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      const Value* chars = Arg(args, kwargs, 0, "chars");
      return Value::Str(PyStrip(s, name == "strip" ? 0 : name == "lstrip" ? 1 : 2, chars ? *chars : Value()));
    }
    if (name == "split" || name == "rsplit") {
      const Value* sep = Arg(args, kwargs, 0, "sep");
      const Value* maxsplit = Arg(args, kwargs, 1, "maxsplit");
      if (sep && sep->is_string() && sep->AsString().empty()) return TypeError("empty separator");
      int64_t m = maxsplit ? maxsplit->AsInt() : -1;
      if (name == "rsplit" && m >= 0) return TypeError("rsplit with maxsplit is not supported");
      return Value::MakeList(PySplit(s, sep, m));
    }
    if (name == "startswith" || name == "endswith") {
      const Value* p = Arg(args, kwargs, 0, "prefix");
      if (p == nullptr) return TypeError(absl::StrCat(AV(name), " needs an argument"));
      std::vector<Value> cands = p->is_list() ? p->AsList() : std::vector<Value>{*p};
      for (const Value& c : cands) {
        if (!c.is_string()) return TypeError(absl::StrCat(AV(name), " needs a string"));
        const std::string& x = c.AsString();
        if (x.size() > s.size()) continue;
        if (name == "startswith" ? s.compare(0, x.size(), x) == 0 : s.compare(s.size() - x.size(), x.size(), x) == 0) return Value::Bool(true);
      }
      return Value::Bool(false);
    }
    if (name == "upper") return Value::Str(CaseMap(s, 0));
    if (name == "lower") return Value::Str(CaseMap(s, 1));
    if (name == "title") return Value::Str(Title(s));
    if (name == "capitalize") return Value::Str(Capitalize(s));
    if (name == "replace") {
      auto from = StrArg(Arg(args, kwargs, 0, "old"), "replace: old");
      auto to = StrArg(Arg(args, kwargs, 1, "new"), "replace: new");
      if (!from.ok()) return from.status();
      if (!to.ok()) return to.status();
      const Value* count = Arg(args, kwargs, 2, "count");
      int64_t left = count ? count->AsInt() : -1;
      if (from->empty()) return TypeError("replace with an empty pattern is not supported");
      std::string out;
      size_t b = 0;
      while (left != 0) {
        size_t p = s.find(*from, b);
        if (p == std::string::npos) break;
        out.append(s, b, p - b);
        out += *to;
        if (out.size() > kMaxStringBytes) return TypeError("replace: the result is longer than the string limit");
        b = p + from->size();
        if (left > 0) --left;
      }
      out.append(s, b);
      return Value::Str(std::move(out));
    }
    if (name == "find" || name == "count") {
      auto sub = StrArg(Arg(args, kwargs, 0, "sub"), absl::StrCat(AV(name), ": sub"));
      if (!sub.ok()) return sub.status();
      if (name == "find") {
        size_t p = s.find(*sub);
        if (p == std::string::npos) return Value::Int(-1);
        return Value::Int(static_cast<int64_t>(CodePoints(s.substr(0, p)).size()));
      }
      if (sub->empty()) return Value::Int(static_cast<int64_t>(CodePoints(s).size()) + 1);
      int64_t n = 0;
      for (size_t p = s.find(*sub); p != std::string::npos; p = s.find(*sub, p + sub->size())) ++n;
      return Value::Int(n);
    }
    if (name == "join") {
      const Value* it = Arg(args, kwargs, 0, "iterable");
      if (it == nullptr) return TypeError("join needs an iterable");
      auto items = Iterate(*it);
      if (!items.ok()) return items.status();
      std::vector<std::string> parts;
      size_t total = 0;
      for (const Value& x : *items) {
        if (!x.is_string()) return TypeError("join: sequence item is not a string");
        parts.push_back(x.AsString());
        total += x.AsString().size() + s.size();
        if (total > kMaxStringBytes) return TypeError("join: the result is longer than the string limit");
      }
      return Value::Str(absl::StrJoin(parts, s));
    }
    if (name == "splitlines") {
      List out;
      size_t b = 0;
      for (size_t k = 0; k < s.size(); ++k) {
        if (s[k] == '\n' || s[k] == '\r') {
          out.push_back(Value::Str(s.substr(b, k - b)));
          if (s[k] == '\r' && k + 1 < s.size() && s[k + 1] == '\n') ++k;
          b = k + 1;
        }
      }
      if (b < s.size()) out.push_back(Value::Str(s.substr(b)));
      return Value::MakeList(std::move(out));
    }
    if (name == "isdigit" || name == "isalpha" || name == "isspace" || name == "isalnum") {
      if (s.empty()) return Value::Bool(false);
      for (unsigned char c : s) {
        bool ok = name == "isdigit" ? std::isdigit(c) : name == "isalpha" ? std::isalpha(c) : name == "isspace" ? std::isspace(c) : std::isalnum(c);
        if (c >= 0x80) return TypeError(absl::StrCat(AV(name), " on non-ASCII text is not supported"));
        if (!ok) return Value::Bool(false);
      }
      return Value::Bool(true);
    }
    if (name == "removeprefix" || name == "removesuffix") {
      auto x = StrArg(Arg(args, kwargs, 0, "fix"), name);
      if (!x.ok()) return x.status();
      if (name == "removeprefix" && s.compare(0, x->size(), *x) == 0) return Value::Str(s.substr(x->size()));
      if (name == "removesuffix" && x->size() <= s.size() && s.compare(s.size() - x->size(), x->size(), *x) == 0) return Value::Str(s.substr(0, s.size() - x->size()));
      return obj;
    }
  }
  if (obj.type() == Value::Type::kDict) {
    if (name == "items") {
      List out;
      for (const auto& [k, x] : obj.AsDict()) out.push_back(Value::MakeTuple({Value::Str(k), x}));
      return Value::MakeList(std::move(out));
    }
    if (name == "keys" || name == "values") {
      List out;
      for (const auto& [k, x] : obj.AsDict()) out.push_back(name == "keys" ? Value::Str(k) : x);
      return Value::MakeList(std::move(out));
    }
    if (name == "get") {
      const Value* key = Arg(args, kwargs, 0, "key");
      const Value* def = Arg(args, kwargs, 1, "default");
      if (key && key->is_string()) {
        const Value* x = obj.Find(key->AsString());
        if (x) return *x;
      }
      return def ? *def : Value::None();
    }
  }
  if (obj.is_undefined()) return TypeError(absl::StrCat("'", obj.undefined_name(), "' is undefined"));
  return TypeError(absl::StrCat("'", obj.TypeName(), "' object has no method '", AV(name), "'"));
}

absl::StatusOr<Value> CallFunction(std::string_view name, const std::vector<Value>& args, const Kwargs& kwargs) {
  if (name == "raise_exception") {
    return absl::InvalidArgumentError(args.empty() ? "raise_exception" : args[0].Str());
  }
  if (name == "namespace" || name == "dict") {
    Dict d;
    if (!args.empty()) {
      if (args.size() != 1 || args[0].type() != Value::Type::kDict) return TypeError(absl::StrCat(AV(name), "() takes keyword arguments or one dict"));
      d = args[0].AsDict();
    }
    for (const auto& [k, v] : kwargs) {
      bool replaced = false;
      for (auto& [dk, dv] : d) if (dk == k) { dv = v; replaced = true; }
      if (!replaced) d.emplace_back(k, v);
    }
    return name == "namespace" ? Value::MakeNamespace(std::move(d)) : Value::MakeDict(std::move(d));
  }
  if (name == "range") {
    if (args.empty() || args.size() > 3) return TypeError("range takes 1 to 3 arguments");
    for (const Value& a : args) if (a.type() != Value::Type::kInt) return TypeError("range needs integers");
    int64_t b = 0, e, st = 1;
    if (args.size() == 1) e = args[0].AsInt();
    else { b = args[0].AsInt(); e = args[1].AsInt(); }
    if (args.size() == 3) st = args[2].AsInt();
    if (st == 0) return TypeError("range step cannot be zero");
    List out;
    for (int64_t i = b; st > 0 ? i < e : i > e; i += st) {
      if (out.size() > 100000) return TypeError("range too large");  // sandbox limit, as jinja2's MAX_RANGE
      out.push_back(Value::Int(i));
    }
    return Value::MakeList(std::move(out));
  }
  if (name == "strftime_now") {
    if (args.empty() || !args[0].is_string()) return TypeError("strftime_now needs a format string");
    std::time_t t = std::time(nullptr);
    std::tm tm;
    localtime_r(&t, &tm);
    char buf[256];
    size_t n = std::strftime(buf, sizeof(buf), args[0].AsString().c_str(), &tm);
    return Value::Str(std::string(buf, n));
  }
  return TypeError(absl::StrCat("unknown function '", AV(name), "'"));
}

}  // namespace gqa::jinja
