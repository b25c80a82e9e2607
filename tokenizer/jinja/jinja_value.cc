// Jinja values: see jinja_value.h.
#include "tokenizer/jinja/jinja_value.h"

#include <charconv>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "tokenizer/unicode.h"

namespace gqa::jinja {

Value Value::FromJson(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return None();
    case nlohmann::ordered_json::value_t::boolean: return Bool(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Int(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: return Int(static_cast<int64_t>(j.get<uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float: return Float(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return Str(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List l;
      for (const auto& e : j) l.push_back(FromJson(e));
      return MakeList(std::move(l));
    }
    case nlohmann::ordered_json::value_t::object: {
      Dict d;
      for (auto it = j.begin(); it != j.end(); ++it) d.emplace_back(it.key(), FromJson(it.value()));
      return MakeDict(std::move(d));
    }
    default: return None();
  }
}

const Value* Value::Find(std::string_view key) const {
  if (!is_mapping()) return nullptr;
  for (const auto& [k, v] : *d_)
    if (k == key) return &v;
  return nullptr;
}

bool Value::Truthy() const {
  switch (type_) {
    case Type::kUndefined:
    case Type::kNone: return false;
    case Type::kBool:
    case Type::kInt: return i_ != 0;
    case Type::kFloat: return f_ != 0;
    case Type::kString: return !s_->empty();
    case Type::kList: return !l_->empty();
    case Type::kDict: return !d_->empty();
    case Type::kNamespace: return true;
  }
  return false;
}

const char* Value::TypeName() const {
  switch (type_) {
    case Type::kUndefined: return "undefined";
    case Type::kNone: return "NoneType";
    case Type::kBool: return "bool";
    case Type::kInt: return "int";
    case Type::kFloat: return "float";
    case Type::kString: return "str";
    case Type::kList: return "list";
    case Type::kDict: return "dict";
    case Type::kNamespace: return "Namespace";
  }
  return "?";
}

std::string PyFloatRepr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);  // e.g. "-1.2345e+02", shortest digits
  const size_t e = sci.find('e');
  std::string mant = sci.substr(0, e);
  const int exp = std::stoi(sci.substr(e + 1));
  const bool neg = mant[0] == '-';
  if (neg) mant.erase(0, 1);
  std::string digits;
  for (char c : mant)
    if (c != '.') digits += c;
  std::string out;
  if (exp < -4 || exp >= 16) {
    out = digits.substr(0, 1);
    if (digits.size() > 1) {
      out += '.';
      out += digits.substr(1);
    }
    char eb[16];
    std::snprintf(eb, sizeof(eb), "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    out += eb;
  } else if (exp < 0) {
    out = "0.";
    out.append(-exp - 1, '0');
    out += digits;
  } else {
    const size_t point = exp + 1;
    if (digits.size() <= point) {
      out = digits;
      out.append(point - digits.size(), '0');
      out += ".0";
    } else {
      out = digits.substr(0, point);
      out += '.';
      out += digits.substr(point);
    }
  }
  if (!neg) return out;
  std::string signed_out = "-";
  signed_out += out;
  return signed_out;
}

std::string Value::Str() const {
  switch (type_) {
    case Type::kUndefined: return "";
    case Type::kString: return *s_;
    case Type::kNamespace: return "<Namespace>";
    default: return Repr();
  }
}

namespace {

std::string PyStrRepr(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos, has_double = s.find('"') != std::string::npos;
  const char q = has_single && !has_double ? '"' : '\'';
  std::string out(1, q);
  for (unsigned char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == static_cast<unsigned char>(q)) { out += '\\'; out += q; }
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) { char b[8]; std::snprintf(b, sizeof(b), "\\x%02x", c); out += b; }
    else out += static_cast<char>(c);
  }
  out += q;
  return out;
}

void JsonString(const std::string& s, std::string* out) {
  *out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': *out += "\\\""; break;
      case '\\': *out += "\\\\"; break;
      case '\n': *out += "\\n"; break;
      case '\r': *out += "\\r"; break;
      case '\t': *out += "\\t"; break;
      case '\b': *out += "\\b"; break;
      case '\f': *out += "\\f"; break;
      default:
        if (c < 0x20) { char b[8]; std::snprintf(b, sizeof(b), "\\u%04x", c); *out += b; }
        else *out += static_cast<char>(c);
    }
  }
  *out += '"';
}

absl::Status JsonDump(const Value& v, int indent, int level, std::string* out) {
  auto newline = [&](int lvl) {
    *out += '\n';
    out->append(static_cast<size_t>(indent) * lvl, ' ');
  };
  switch (v.type()) {
    case Value::Type::kNone: *out += "null"; return absl::OkStatus();
    case Value::Type::kBool: *out += v.AsBool() ? "true" : "false"; return absl::OkStatus();
    case Value::Type::kInt: *out += std::to_string(v.AsInt()); return absl::OkStatus();
    case Value::Type::kFloat: {
      const double d = v.AsDouble();
      *out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity") : PyFloatRepr(d);
      return absl::OkStatus();
    }
    case Value::Type::kString: JsonString(v.AsString(), out); return absl::OkStatus();
    case Value::Type::kList: {
      if (v.AsList().empty()) { *out += "[]"; return absl::OkStatus(); }
      *out += '[';
      bool first = true;
      for (const Value& e : v.AsList()) {
        if (!first) *out += indent >= 0 ? "," : ", ";
        first = false;
        if (indent >= 0) newline(level + 1);
        absl::Status s = JsonDump(e, indent, level + 1, out);
        if (!s.ok()) return s;
        if (out->size() > kMaxStringBytes) return absl::ResourceExhaustedError("tojson: output too large");
      }
      if (indent >= 0) newline(level);
      *out += ']';
      return absl::OkStatus();
    }
    case Value::Type::kDict: {
      if (v.AsDict().empty()) { *out += "{}"; return absl::OkStatus(); }
      *out += '{';
      bool first = true;
      for (const auto& [k, e] : v.AsDict()) {
        if (!first) *out += indent >= 0 ? "," : ", ";
        first = false;
        if (indent >= 0) newline(level + 1);
        JsonString(k, out);
        *out += ": ";
        absl::Status s = JsonDump(e, indent, level + 1, out);
        if (!s.ok()) return s;
        if (out->size() > kMaxStringBytes) return absl::ResourceExhaustedError("tojson: output too large");
      }
      if (indent >= 0) newline(level);
      *out += '}';
      return absl::OkStatus();
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat("tojson: object of type ", v.TypeName(), " is not JSON serializable"));
  }
}

}  // namespace

namespace {

// repr() into `out`, giving up once it holds more than kMaxStringBytes (the
// renderer refuses such a string): lists shared many times over print far
// more than they hold.
void ReprInto(const Value& v, std::string* out) {
  if (out->size() > kMaxStringBytes) return;
  switch (v.type()) {
    case Value::Type::kList: {
      *out += v.is_tuple() ? "(" : "[";
      const List& l = v.AsList();
      for (size_t k = 0; k < l.size() && out->size() <= kMaxStringBytes; ++k) {
        if (k) *out += ", ";
        ReprInto(l[k], out);
      }
      if (v.is_tuple() && l.size() == 1) *out += ',';
      *out += v.is_tuple() ? ')' : ']';
      return;
    }
    case Value::Type::kDict: {
      *out += "{";
      const Dict& d = v.AsDict();
      for (size_t k = 0; k < d.size() && out->size() <= kMaxStringBytes; ++k) {
        if (k) *out += ", ";
        *out += PyStrRepr(d[k].first);
        *out += ": ";
        ReprInto(d[k].second, out);
      }
      *out += '}';
      return;
    }
    default:
      *out += v.Repr();
  }
}

}  // namespace

std::string Value::Repr() const {
  switch (type_) {
    case Type::kUndefined: return "";
    case Type::kNone: return "None";
    case Type::kBool: return i_ ? "True" : "False";
    case Type::kInt: return std::to_string(i_);
    case Type::kFloat: return PyFloatRepr(f_);
    case Type::kString: return PyStrRepr(*s_);
    case Type::kList:
    case Type::kDict: {
      std::string out;
      ReprInto(*this, &out);
      return out;
    }
    case Type::kNamespace: return "<Namespace>";
  }
  return "";
}

absl::StatusOr<std::string> Value::ToJson(int indent) const {
  std::string out;
  absl::Status s = JsonDump(*this, indent, 0, &out);
  if (!s.ok()) return s;
  return out;
}

bool Equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.type() == Value::Type::kFloat || b.type() == Value::Type::kFloat) return a.AsDouble() == b.AsDouble();
    return a.AsInt() == b.AsInt();
  }
  if (a.type() != b.type()) {
    return a.is_mapping() && b.is_mapping() && false;
  }
  switch (a.type()) {
    case Value::Type::kUndefined:
    case Value::Type::kNone: return true;
    case Value::Type::kString: return a.AsString() == b.AsString();
    case Value::Type::kList: {
      if (a.is_tuple() != b.is_tuple() || a.AsList().size() != b.AsList().size()) return false;
      for (size_t k = 0; k < a.AsList().size(); ++k)
        if (!Equal(a.AsList()[k], b.AsList()[k])) return false;
      return true;
    }
    case Value::Type::kDict: {
      if (a.AsDict().size() != b.AsDict().size()) return false;
      for (const auto& [k, v] : a.AsDict()) {
        const Value* o = b.Find(k);
        if (o == nullptr || !Equal(v, *o)) return false;
      }
      return true;
    }
    case Value::Type::kNamespace: return &a.AsDict() == &b.AsDict();
    default: return false;
  }
}

std::vector<std::string_view> CodePoints(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    int n = Utf8CharLen(s, i);
    if (n == 0) n = 1;
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

bool PyIsSpace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

}  // namespace gqa::jinja
