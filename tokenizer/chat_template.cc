// Chat-template evaluator over the AST of jinja_parser.h.
#include "tokenizer/chat_template.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "tokenizer/jinja/jinja_builtins.h"
#include "tokenizer/jinja/jinja_parser.h"

namespace gqa {
namespace {

using jinja::Body;
using jinja::Expr;
using jinja::Stmt;
using jinja::Value;

absl::Status CheckErr(int line, absl::string_view msg) {
  return absl::InvalidArgumentError(absl::StrCat("chat template line ", line, ": ", msg));
}

// Load-time check that every filter, test, function and method is supported.
absl::Status CheckExpr(const Expr* e) {
  if (e == nullptr) return absl::OkStatus();
  switch (e->kind) {
    case Expr::Kind::kFilter:
      if (!jinja::IsKnownFilter(e->name)) return CheckErr(e->line, absl::StrCat("unsupported filter '", e->name, "'"));
      break;
    case Expr::Kind::kTest:
      if (!jinja::IsKnownTest(e->name)) return CheckErr(e->line, absl::StrCat("unsupported test '", e->name, "'"));
      break;
    case Expr::Kind::kCall:
      if (e->a->kind == Expr::Kind::kName) {
        if (!jinja::IsKnownFunction(e->a->name)) return CheckErr(e->line, absl::StrCat("unsupported function '", e->a->name, "'"));
      } else if (e->a->kind == Expr::Kind::kGetAttr) {
        if (!jinja::IsKnownMethod(e->a->name)) return CheckErr(e->line, absl::StrCat("unsupported method '", e->a->name, "'"));
      } else {
        return CheckErr(e->line, "only named functions and methods can be called");
      }
      break;
    default:
      break;
  }
  for (const jinja::ExprPtr* sub : {&e->a, &e->b, &e->c})
    if (absl::Status s = CheckExpr(sub->get()); !s.ok()) return s;
  for (const auto& x : e->items)
    if (absl::Status s = CheckExpr(x.get()); !s.ok()) return s;
  for (const auto& [k, x] : e->kwargs)
    if (absl::Status s = CheckExpr(x.get()); !s.ok()) return s;
  return absl::OkStatus();
}

absl::Status CheckBody(const Body& body) {
  for (const auto& s : body) {
    if (absl::Status st = CheckExpr(s->expr.get()); !st.ok()) return st;
    if (absl::Status st = CheckExpr(s->filter.get()); !st.ok()) return st;
    for (const auto& [c, b] : s->branches) {
      if (absl::Status st = CheckExpr(c.get()); !st.ok()) return st;
      if (absl::Status st = CheckBody(b); !st.ok()) return st;
    }
    if (absl::Status st = CheckBody(s->body); !st.ok()) return st;
    if (absl::Status st = CheckBody(s->else_body); !st.ok()) return st;
  }
  return absl::OkStatus();
}

class Renderer {
 public:
  explicit Renderer(Value globals) : globals_(std::move(globals)) { scopes_.emplace_back(); }

  enum class Flow { kNormal, kBreak, kContinue };

  absl::StatusOr<Flow> Exec(const Body& body, std::string* out) {
    for (const auto& s : body) {
      if (++steps_ > kMaxSteps) return absl::ResourceExhaustedError("chat template: too many steps");
      if (out->size() > jinja::kMaxStringBytes) {
        return absl::ResourceExhaustedError(
            absl::StrCat("chat template: output longer than ", jinja::kMaxStringBytes, " bytes"));
      }
      switch (s->kind) {
        case Stmt::Kind::kText:
          *out += s->text;
          break;
        case Stmt::Kind::kOutput: {
          auto v = Eval(*s->expr);
          if (!v.ok()) return v.status();
          *out += v->Str();
          break;
        }
        case Stmt::Kind::kIf: {
          bool taken = false;
          for (const auto& [cond, branch] : s->branches) {
            auto c = Eval(*cond);
            if (!c.ok()) return c.status();
            if (c->Truthy()) {
              auto f = Exec(branch, out);
              if (!f.ok() || *f != Flow::kNormal) return f;
              taken = true;
              break;
            }
          }
          if (!taken) {
            auto f = Exec(s->else_body, out);
            if (!f.ok() || *f != Flow::kNormal) return f;
          }
          break;
        }
        case Stmt::Kind::kFor: {
          absl::Status st = ExecFor(*s, out);
          if (!st.ok()) return st;
          break;
        }
        case Stmt::Kind::kSet: {
          Value v;
          if (s->expr) {
            auto r = Eval(*s->expr);
            if (!r.ok()) return r.status();
            v = *r;
          } else {
            std::string captured;
            auto f = Exec(s->body, &captured);
            if (!f.ok()) return f.status();
            v = Value::Str(std::move(captured));
          }
          if (s->attr.empty()) {
            Assign(s->targets[0], std::move(v));
          } else {
            Value ns = Lookup(s->targets[0]);
            if (ns.type() != Value::Type::kNamespace) {
              return CheckErr(s->line, absl::StrCat("cannot assign attribute on non-namespace object '", s->targets[0], "'"));
            }
            bool found = false;
            for (auto& [k, x] : ns.MutableDict()) if (k == s->attr) { x = v; found = true; }
            if (!found) ns.MutableDict().emplace_back(s->attr, v);
          }
          break;
        }
        case Stmt::Kind::kBreak: return Flow::kBreak;
        case Stmt::Kind::kContinue: return Flow::kContinue;
        case Stmt::Kind::kBlock: {
          auto f = Exec(s->body, out);
          if (!f.ok() || *f != Flow::kNormal) return f;
          break;
        }
      }
    }
    return Flow::kNormal;
  }

 private:
  static constexpr int64_t kMaxSteps = 10'000'000;

  Value Lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it)
      for (const auto& [k, v] : *it)
        if (k == name) return v;
    if (const Value* v = globals_.Find(name)) return *v;
    return Value::Undefined(name);
  }
  void Assign(const std::string& name, Value v) {
    for (auto& [k, x] : scopes_.back())
      if (k == name) { x = std::move(v); return; }
    scopes_.back().emplace_back(name, std::move(v));
  }

  absl::Status ExecFor(const Stmt& s, std::string* out) {
    auto iterable = Eval(*s.expr);
    if (!iterable.ok()) return iterable.status();
    auto items_or = jinja::Iterate(*iterable);
    if (!items_or.ok()) return CheckErr(s.line, items_or.status().message());
    std::vector<Value> items;
    auto bind = [&](const Value& item) -> absl::Status {
      if (s.targets.size() == 1) {
        Assign(s.targets[0], item);
        return absl::OkStatus();
      }
      auto parts = jinja::Iterate(item);
      if (!parts.ok() || parts->size() != s.targets.size()) return CheckErr(s.line, "cannot unpack loop item");
      for (size_t k = 0; k < s.targets.size(); ++k) Assign(s.targets[k], (*parts)[k]);
      return absl::OkStatus();
    };
    if (s.filter) {  // filtered before the loop, so loop.* counts only kept items
      for (const Value& item : *items_or) {
        if (++steps_ > kMaxSteps) return absl::ResourceExhaustedError("chat template: too many steps");
        scopes_.emplace_back();
        absl::Status b = bind(item);
        auto keep = b.ok() ? Eval(*s.filter) : absl::StatusOr<Value>(b);
        scopes_.pop_back();
        if (!keep.ok()) return keep.status();
        if (keep->Truthy()) items.push_back(item);
      }
    } else {
      items = std::move(*items_or);
    }
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      // Empty loop bodies take no steps of their own: nested loops count here.
      if (++steps_ > kMaxSteps) return absl::ResourceExhaustedError("chat template: too many steps");
      jinja::Dict loop = {
          {"index", Value::Int(i + 1)}, {"index0", Value::Int(i)}, {"revindex", Value::Int(n - i)},
          {"revindex0", Value::Int(n - i - 1)}, {"first", Value::Bool(i == 0)}, {"last", Value::Bool(i == n - 1)},
          {"length", Value::Int(n)}, {"depth", Value::Int(1)}, {"depth0", Value::Int(0)},
          {"previtem", i > 0 ? items[i - 1] : Value::Undefined("previtem")},
          {"nextitem", i + 1 < n ? items[i + 1] : Value::Undefined("nextitem")}};
      scopes_.emplace_back();
      scopes_.back().emplace_back("loop", Value::MakeDict(std::move(loop)));
      absl::Status b = bind(items[i]);
      if (!b.ok()) return b;
      auto f = Exec(s.body, out);
      scopes_.pop_back();
      if (!f.ok()) return f.status();
      if (*f == Flow::kBreak) break;
    }
    if (n == 0) {
      auto f = Exec(s.else_body, out);
      if (!f.ok()) return f.status();
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Value> Arith(const std::string& op, const Value& a, const Value& b, int line) {
    auto type_error = [&] {
      return CheckErr(line, absl::StrCat("unsupported operand type(s) for ", op, ": '", a.TypeName(), "' and '", b.TypeName(), "'"));
    };
    if (a.is_undefined() || b.is_undefined()) {
      return CheckErr(line, absl::StrCat("'", (a.is_undefined() ? a : b).undefined_name(), "' is undefined"));
    }
    if (op == "+") {
      if (a.is_string() && b.is_string()) return Value::Str(a.AsString() + b.AsString());
      if (a.is_list() && b.is_list()) {
        jinja::List l = a.AsList();
        l.insert(l.end(), b.AsList().begin(), b.AsList().end());
        return Value::MakeList(std::move(l));
      }
    }
    if (op == "*" && ((a.is_string() && b.type() == Value::Type::kInt) || (b.is_string() && a.type() == Value::Type::kInt))) {
      const std::string& s = a.is_string() ? a.AsString() : b.AsString();
      std::string out;
      for (int64_t k = 0; k < (a.is_string() ? b : a).AsInt() && out.size() < (1u << 24); ++k) out += s;
      return Value::Str(std::move(out));
    }
    if (!a.is_number() || !b.is_number()) return type_error();
    const bool fl = a.type() == Value::Type::kFloat || b.type() == Value::Type::kFloat;
    const double x = a.AsDouble(), y = b.AsDouble();
    const int64_t i = a.AsInt(), j = b.AsInt();
    if (op == "+") return fl ? Value::Float(x + y) : Value::Int(i + j);
    if (op == "-") return fl ? Value::Float(x - y) : Value::Int(i - j);
    if (op == "*") return fl ? Value::Float(x * y) : Value::Int(i * j);
    if (op == "/") {
      if (y == 0) return CheckErr(line, "division by zero");
      return Value::Float(x / y);
    }
    if (op == "//" || op == "%") {
      if (y == 0) return CheckErr(line, "division by zero");
      if (fl) {
        const double q = std::floor(x / y);
        return op == "//" ? Value::Float(q) : Value::Float(x - q * y);
      }
      int64_t q = i / j;
      if ((i % j != 0) && ((i < 0) != (j < 0))) --q;  // floor division
      return op == "//" ? Value::Int(q) : Value::Int(i - q * j);
    }
    if (op == "**") {
      if (!fl && j >= 0) {
        int64_t r = 1;
        for (int64_t k = 0; k < j && k < 64; ++k) r *= i;
        return Value::Int(r);
      }
      return Value::Float(std::pow(x, y));
    }
    return type_error();
  }

  // Every value a template computes is held to the limits on strings, items
  // and nesting (walks over values recurse per level), and counts as a step.
  absl::StatusOr<Value> Eval(const Expr& e) {
    if (++steps_ > kMaxSteps) return absl::ResourceExhaustedError("chat template: too many steps");
    auto v = EvalNode(e);
    if (!v.ok()) return v;
    if (v->is_string() && v->AsString().size() > jinja::kMaxStringBytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("chat template line ", e.line, ": a string longer than ", jinja::kMaxStringBytes, " bytes"));
    }
    if (v->depth() > jinja::kMaxValueDepth) {
      return absl::ResourceExhaustedError(
          absl::StrCat("chat template line ", e.line, ": a value nested deeper than ", jinja::kMaxValueDepth, " levels"));
    }
    if ((v->is_list() && v->AsList().size() > jinja::kMaxItems) ||
        (v->is_mapping() && v->AsDict().size() > jinja::kMaxItems)) {
      return absl::ResourceExhaustedError(
          absl::StrCat("chat template line ", e.line, ": a list or dict of more than ", jinja::kMaxItems, " items"));
    }
    return v;
  }

  absl::StatusOr<Value> EvalNode(const Expr& e) {
    switch (e.kind) {
      case Expr::Kind::kLiteral: return e.value;
      case Expr::Kind::kName: return Lookup(e.name);
      case Expr::Kind::kList: {
        jinja::List l;
        for (const auto& x : e.items) {
          auto v = Eval(*x);
          if (!v.ok()) return v;
          l.push_back(*v);
        }
        return Value::MakeList(std::move(l));
      }
      case Expr::Kind::kDict: {
        jinja::Dict d;
        for (size_t k = 0; k + 1 < e.items.size(); k += 2) {
          auto key = Eval(*e.items[k]);
          if (!key.ok()) return key;
          if (!key->is_string()) return CheckErr(e.line, "dict keys must be strings");
          auto v = Eval(*e.items[k + 1]);
          if (!v.ok()) return v;
          bool replaced = false;
          for (auto& [dk, dv] : d) if (dk == key->AsString()) { dv = *v; replaced = true; }
          if (!replaced) d.emplace_back(key->AsString(), *v);
        }
        return Value::MakeDict(std::move(d));
      }
      case Expr::Kind::kGetAttr: {
        auto obj = Eval(*e.a);
        if (!obj.ok()) return obj;
        if (obj->is_undefined()) return CheckErr(e.line, absl::StrCat("'", obj->undefined_name(), "' is undefined"));
        if (obj->is_mapping()) {
          const Value* v = obj->Find(e.name);
          return v ? *v : Value::Undefined(e.name);
        }
        return Value::Undefined(e.name);
      }
      case Expr::Kind::kGetItem: {
        auto obj = Eval(*e.a);
        if (!obj.ok()) return obj;
        auto key = Eval(*e.b);
        if (!key.ok()) return key;
        auto r = jinja::Subscript(*obj, *key);
        if (!r.ok()) return CheckErr(e.line, r.status().message());
        return r;
      }
      case Expr::Kind::kSlice: {
        auto obj = Eval(*e.a);
        if (!obj.ok()) return obj;
        Value parts[3];
        for (int k = 0; k < 3; ++k) {
          if (!e.items[k]) { parts[k] = Value::None(); continue; }
          auto v = Eval(*e.items[k]);
          if (!v.ok()) return v;
          parts[k] = *v;
        }
        auto r = jinja::Slice(*obj, parts[0], parts[1], parts[2]);
        if (!r.ok()) return CheckErr(e.line, r.status().message());
        return r;
      }
      case Expr::Kind::kCall: {
        std::vector<Value> args;
        jinja::Kwargs kwargs;
        absl::Status st = EvalArgs(e, &args, &kwargs);
        if (!st.ok()) return st;
        if (e.a->kind == Expr::Kind::kName) {
          auto r = jinja::CallFunction(e.a->name, args, kwargs);
          if (!r.ok() && e.a->name != "raise_exception") return CheckErr(e.line, r.status().message());
          return r;
        }
        auto obj = Eval(*e.a->a);
        if (!obj.ok()) return obj;
        auto r = jinja::CallMethod(*obj, e.a->name, args, kwargs);
        if (!r.ok()) return CheckErr(e.line, r.status().message());
        return r;
      }
      case Expr::Kind::kFilter: {
        auto v = Eval(*e.a);
        if (!v.ok()) return v;
        std::vector<Value> args;
        jinja::Kwargs kwargs;
        absl::Status st = EvalArgs(e, &args, &kwargs);
        if (!st.ok()) return st;
        auto r = jinja::ApplyFilter(e.name, *v, args, kwargs);
        if (!r.ok()) return CheckErr(e.line, r.status().message());
        return r;
      }
      case Expr::Kind::kTest: {
        auto v = Eval(*e.a);
        if (!v.ok()) return v;
        std::vector<Value> args;
        jinja::Kwargs kwargs;
        absl::Status st = EvalArgs(e, &args, &kwargs);
        if (!st.ok()) return st;
        auto r = jinja::ApplyTest(e.name, *v, args);
        if (!r.ok()) return CheckErr(e.line, r.status().message());
        return Value::Bool(*r != e.negated);
      }
      case Expr::Kind::kUnary: {
        auto v = Eval(*e.a);
        if (!v.ok()) return v;
        if (e.name == "not") return Value::Bool(!v->Truthy());
        if (!v->is_number()) return CheckErr(e.line, absl::StrCat("bad operand type for unary ", e.name, ": '", v->TypeName(), "'"));
        if (e.name == "+") return *v;
        return v->type() == Value::Type::kFloat ? Value::Float(-v->AsDouble()) : Value::Int(-v->AsInt());
      }
      case Expr::Kind::kCondition: {
        auto c = Eval(*e.a);
        if (!c.ok()) return c;
        if (c->Truthy()) return Eval(*e.b);
        if (e.c) return Eval(*e.c);
        return Value::Undefined("else");
      }
      case Expr::Kind::kBinary: {
        const std::string& op = e.name;
        auto a = Eval(*e.a);
        if (!a.ok()) return a;
        if (op == "and") return a->Truthy() ? Eval(*e.b) : *a;
        if (op == "or") return a->Truthy() ? *a : Eval(*e.b);
        auto b = Eval(*e.b);
        if (!b.ok()) return b;
        if (op == "==") return Value::Bool(jinja::Equal(*a, *b));
        if (op == "!=") return Value::Bool(!jinja::Equal(*a, *b));
        if (op == "~") return Value::Str(a->Str() + b->Str());
        if (op == "in" || op == "not in") {
          auto r = jinja::ApplyTest("in", *a, {*b});
          if (b->is_undefined()) return CheckErr(e.line, absl::StrCat("'", b->undefined_name(), "' is undefined"));
          if (b->is_string() && !a->is_string()) return CheckErr(e.line, "'in <string>' requires string as left operand");
          if (!r.ok()) return CheckErr(e.line, r.status().message());
          if (b->type() == Value::Type::kDict) {
            bool found = a->is_string() && b->Find(a->AsString()) != nullptr;
            return Value::Bool(found == (op == "in"));
          }
          return Value::Bool(*r == (op == "in"));
        }
        if (op == "<" || op == ">" || op == "<=" || op == ">=") {
          auto r = jinja::ApplyTest(op, *a, {*b});
          if (!r.ok()) return CheckErr(e.line, r.status().message());
          return Value::Bool(*r);
        }
        return Arith(op, *a, *b, e.line);
      }
    }
    return CheckErr(e.line, "bad expression");
  }

  absl::Status EvalArgs(const Expr& e, std::vector<Value>* args, jinja::Kwargs* kwargs) {
    for (const auto& x : e.items) {
      auto v = Eval(*x);
      if (!v.ok()) return v.status();
      args->push_back(*v);
    }
    for (const auto& [k, x] : e.kwargs) {
      auto v = Eval(*x);
      if (!v.ok()) return v.status();
      kwargs->emplace_back(k, *v);
    }
    return absl::OkStatus();
  }

  Value globals_;
  std::vector<jinja::Dict> scopes_;
  int64_t steps_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::Compile(std::string_view source) {
  auto body = jinja::Parse(source);
  if (!body.ok()) return body.status();
  absl::Status s = CheckBody(*body);
  if (!s.ok()) return s;
  auto t = std::unique_ptr<ChatTemplate>(new ChatTemplate());
  t->body_ = std::move(*body);
  return t;
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::ordered_json& vars) const {
  if (!vars.is_object()) return absl::InvalidArgumentError("chat template variables must be a JSON object");
  Renderer r(Value::FromJson(vars));
  std::string out;
  auto f = r.Exec(body_, &out);
  // A limit reached is the request's fault (400), not the server's load (429).
  if (!f.ok() && absl::IsResourceExhausted(f.status())) return absl::InvalidArgumentError(f.status().message());
  if (!f.ok()) return f.status();
  if (out.size() > jinja::kMaxStringBytes) {
    return absl::InvalidArgumentError(absl::StrCat("chat template: output longer than ", jinja::kMaxStringBytes, " bytes"));
  }
  return out;
}

}  // namespace gqa
