// Jinja-subset lexer and parser: see jinja_parser.h. Precedence follows
// jinja2/parser.py: condexpr < or < and < not < compare < +,- < ~ < *,/,//,%
// < ** < unary, with filters, tests and calls binding to the unary operand.
#include "tokenizer/jinja/jinja_parser.h"

#include <cstdlib>
#include <initializer_list>

#include "absl/strings/str_cat.h"
#include "tokenizer/unicode.h"

namespace gqa::jinja {
namespace {

// ---- stage 1: split the source into text and tags ----------------------

struct Chunk {
  enum class Kind { kText, kVar, kBlock } kind;
  std::string text;  // text, or the tag's inside without delimiters/signs
  int line;
};

bool IsWs(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Line numbers of positions asked in increasing order, counted once (from
// the start each time, a template of many tags took quadratic time).
class LineCounter {
 public:
  explicit LineCounter(std::string_view s) : s_(s) {}
  int At(size_t pos) {
    if (pos < pos_) pos_ = 0, line_ = 1;
    for (; pos_ < pos && pos_ < s_.size(); ++pos_) line_ += s_[pos_] == '\n';
    return line_;
  }

 private:
  std::string_view s_;
  size_t pos_ = 0;
  int line_ = 1;
};

// The deepest nesting of blocks, and of expression levels within a tag.
constexpr int kMaxNesting = 64;

absl::Status Err(int line, std::string_view msg) {
  return absl::InvalidArgumentError(absl::StrCat("chat template line ", line, ": ", AV(msg)));
}

absl::StatusOr<std::vector<Chunk>> SplitChunks(std::string_view raw) {
  // Newlines normalised and one trailing newline dropped, as jinja2 does.
  std::string src;
  src.reserve(raw.size());
  for (size_t k = 0; k < raw.size(); ++k) {
    if (raw[k] == '\r') {
      src += '\n';
      if (k + 1 < raw.size() && raw[k + 1] == '\n') ++k;
    } else {
      src += raw[k];
    }
  }
  if (!src.empty() && src.back() == '\n') src.pop_back();

  std::vector<Chunk> out;
  LineCounter lines(src);
  size_t pos = 0;
  bool line_starting = true;
  while (pos < src.size()) {
    size_t p = pos;
    while (true) {
      p = src.find('{', p);
      if (p == std::string::npos || p + 1 >= src.size()) { p = std::string::npos; break; }
      const char k = src[p + 1];
      if (k == '{' || k == '%' || k == '#') break;
      ++p;
    }
    if (p == std::string::npos) {
      out.push_back({Chunk::Kind::kText, src.substr(pos), lines.At(pos)});
      break;
    }
    std::string text = src.substr(pos, p - pos);
    const char kind = src[p + 1];
    const char sign = p + 2 < src.size() && (src[p + 2] == '-' || src[p + 2] == '+') ? src[p + 2] : 0;
    if (sign == '-') {
      while (!text.empty() && IsWs(text.back())) text.pop_back();
    } else if ((kind == '%' || kind == '#') && sign != '+') {  // lstrip_blocks
      const size_t l_pos = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
      if (l_pos > 0 || line_starting) {
        bool all_ws = l_pos < text.size();
        for (size_t k = l_pos; k < text.size(); ++k) all_ws &= IsWs(text[k]);
        if (all_ws) text.resize(l_pos);
      }
    }
    if (!text.empty()) out.push_back({Chunk::Kind::kText, text, lines.At(pos)});
    const int line = lines.At(p);
    // Find the closing delimiter, skipping string literals.
    const char close = kind == '{' ? '}' : kind == '%' ? '%' : '#';
    size_t q = p + 2 + (sign ? 1 : 0);
    const size_t inner_begin = q;
    size_t end = std::string::npos;
    char quote = 0;
    for (; q < src.size(); ++q) {
      const char c = src[q];
      if (kind != '#' && quote) {
        if (c == '\\') ++q;
        else if (c == quote) quote = 0;
        continue;
      }
      if (kind != '#' && (c == '\'' || c == '"')) { quote = c; continue; }
      if (c == close && q + 1 < src.size() && src[q + 1] == '}') { end = q; break; }
    }
    if (end == std::string::npos) return Err(line, absl::StrCat("unclosed tag '{", std::string(1, kind), "'"));
    size_t inner_end = end;
    char rsign = 0;
    if (inner_end > inner_begin && (src[inner_end - 1] == '-' || src[inner_end - 1] == '+')) {
      rsign = src[inner_end - 1];
      --inner_end;
    }
    size_t after = end + 2;
    if (rsign == '-') {
      while (after < src.size() && IsWs(src[after])) ++after;
    } else if ((kind == '%' || kind == '#') && rsign != '+' && after < src.size() && src[after] == '\n') {
      ++after;  // trim_blocks
    }
    line_starting = after > 0 && src[after - 1] == '\n';
    if (kind != '#') {
      out.push_back({kind == '{' ? Chunk::Kind::kVar : Chunk::Kind::kBlock,
                     src.substr(inner_begin, inner_end - inner_begin), line});
    }
    pos = after;
  }
  return out;
}

// ---- stage 2: tokens inside a tag ------------------------------------------

struct Tok {
  enum class Kind { kName, kString, kInt, kFloat, kOp, kEnd } kind;
  std::string text;
  Value value;
};

absl::StatusOr<std::string> Unescape(std::string_view s, int line) {
  std::string out;
  for (size_t k = 0; k < s.size(); ++k) {
    if (s[k] != '\\' || k + 1 >= s.size()) {
      out += s[k];
      continue;
    }
    const char c = s[++k];
    auto hex = [&](int n) -> int64_t {
      int64_t v = 0;
      for (int d = 1; d <= n; ++d) {
        if (k + d >= s.size()) return -1;
        const char h = s[k + d];
        int x = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
        if (x < 0) return -1;
        v = v * 16 + x;
      }
      return v;
    };
    switch (c) {
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case 'r': out += '\r'; break;
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case 'a': out += '\a'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'v': out += '\v'; break;
      case '0': out += '\0'; break;
      case '\n': break;
      case 'x': case 'u': case 'U': {
        const int n = c == 'x' ? 2 : c == 'u' ? 4 : 8;
        const int64_t v = hex(n);
        if (v < 0 || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return Err(line, "bad escape in string literal");
        AppendUtf8(static_cast<uint32_t>(v), &out);
        k += n;
        break;
      }
      default: out += '\\'; out += c;  // Python keeps unknown escapes
    }
  }
  return out;
}

absl::StatusOr<std::vector<Tok>> Lex(std::string_view s, int line) {
  static const char* kOps[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">",
                               "=", ".", ",", ":", "|", "(", ")", "[", "]", "{", "}"};
  std::vector<Tok> toks;
  size_t k = 0;
  while (k < s.size()) {
    const char c = s[k];
    if (IsWs(c)) { ++k; continue; }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t e = k;
      while (e < s.size() && (std::isalnum(static_cast<unsigned char>(s[e])) || s[e] == '_')) ++e;
      toks.push_back({Tok::Kind::kName, std::string(s.substr(k, e - k)), {}});
      k = e;
      continue;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t e = k;
      bool is_float = false;
      while (e < s.size() && (std::isdigit(static_cast<unsigned char>(s[e])) || s[e] == '_')) ++e;
      if (e + 1 < s.size() && s[e] == '.' && std::isdigit(static_cast<unsigned char>(s[e + 1]))) {
        is_float = true;
        ++e;
        while (e < s.size() && std::isdigit(static_cast<unsigned char>(s[e]))) ++e;
      }
      if (e < s.size() && (s[e] == 'e' || s[e] == 'E')) {  // exponent: 1e3, 2.5e-4
        size_t x = e + 1;
        if (x < s.size() && (s[x] == '+' || s[x] == '-')) ++x;
        if (x < s.size() && std::isdigit(static_cast<unsigned char>(s[x]))) {
          is_float = true;
          e = x;
          while (e < s.size() && std::isdigit(static_cast<unsigned char>(s[e]))) ++e;
        }
      }
      std::string num;
      for (size_t d = k; d < e; ++d) if (s[d] != '_') num += s[d];
      Tok t{is_float ? Tok::Kind::kFloat : Tok::Kind::kInt, num, {}};
      t.value = is_float ? Value::Float(std::strtod(num.c_str(), nullptr)) : Value::Int(std::strtoll(num.c_str(), nullptr, 10));
      toks.push_back(std::move(t));
      k = e;
      continue;
    }
    if (c == '\'' || c == '"') {
      size_t e = k + 1;
      while (e < s.size() && s[e] != c) e += s[e] == '\\' ? 2 : 1;
      if (e >= s.size()) return Err(line, "unterminated string literal");
      auto str = Unescape(s.substr(k + 1, e - k - 1), line);
      if (!str.ok()) return str.status();
      Tok t{Tok::Kind::kString, "", Value::Str(*str)};
      toks.push_back(std::move(t));
      k = e + 1;
      continue;
    }
    bool matched = false;
    for (const char* op : kOps) {
      const std::string_view o(op);
      if (s.substr(k, o.size()) == o) {
        toks.push_back({Tok::Kind::kOp, std::string(o), {}});
        k += o.size();
        matched = true;
        break;
      }
    }
    if (!matched) return Err(line, absl::StrCat("unexpected character '", std::string(1, c), "'"));
  }
  toks.push_back({Tok::Kind::kEnd, "", {}});
  return toks;
}

// ---- stage 3: expressions --------------------------------------------------

class ExprParser {
 public:
  ExprParser(std::vector<Tok> toks, int line) : t_(std::move(toks)), line_(line) {}

  const Tok& Peek(size_t ahead = 0) const { return t_[std::min(p_ + ahead, t_.size() - 1)]; }
  bool AtEnd() const { return Peek().kind == Tok::Kind::kEnd; }
  bool IsOp(std::string_view op, size_t ahead = 0) const { return Peek(ahead).kind == Tok::Kind::kOp && Peek(ahead).text == op; }
  bool IsName(std::string_view n, size_t ahead = 0) const { return Peek(ahead).kind == Tok::Kind::kName && Peek(ahead).text == n; }
  void Next() { if (p_ + 1 < t_.size()) ++p_; }
  absl::Status Expect(std::string_view op) {
    if (!IsOp(op)) return Err(line_, absl::StrCat("expected '", AV(op), "', got '", Describe(), "'"));
    Next();
    return absl::OkStatus();
  }
  std::string Describe() const { return AtEnd() ? "end of tag" : Peek().kind == Tok::Kind::kString ? "string" : Peek().text; }
  absl::StatusOr<std::string> ExpectName() {
    if (Peek().kind != Tok::Kind::kName) return Err(line_, absl::StrCat("expected a AV(name), got '", Describe(), "'"));
    std::string n = Peek().text;
    Next();
    return n;
  }
  int line() const { return line_; }

  // Every recursive call and every link of an operator, comparison, postfix
  // or filter chain adds a level to the tree, and to the stack of each walk
  // over it (checks, rendering, destruction); past kMaxNesting the template
  // is refused. A scope gives back the levels taken inside it.
  struct DepthScope {
    explicit DepthScope(ExprParser* p) : p(p), saved(p->depth_) {}
    ~DepthScope() { p->depth_ = saved; }
    ExprParser* p;
    int saved;
  };
  absl::Status Deeper() {
    if (++depth_ > kMaxNesting) return Err(line_, absl::StrCat("expression nested deeper than ", kMaxNesting, " levels"));
    return absl::OkStatus();
  }

  ExprPtr Make(Expr::Kind k) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->line = line_;
    return e;
  }

  absl::StatusOr<ExprPtr> ParseExpression(bool with_condexpr = true) {
    DepthScope scope(this);
    if (absl::Status st = Deeper(); !st.ok()) return st;
    auto a = ParseOr();
    if (!a.ok() || !with_condexpr) return a;
    ExprPtr node = std::move(*a);
    while (IsName("if")) {
      if (absl::Status st = Deeper(); !st.ok()) return st;
      Next();
      auto cond = ParseOr();
      if (!cond.ok()) return cond;
      ExprPtr els;
      if (IsName("else")) {
        Next();
        auto e = ParseExpression();
        if (!e.ok()) return e;
        els = std::move(*e);
      }
      auto c = Make(Expr::Kind::kCondition);
      c->a = std::move(*cond);
      c->b = std::move(node);
      c->c = std::move(els);
      node = std::move(c);
    }
    return node;
  }

 private:
  absl::StatusOr<ExprPtr> Binary(ExprPtr a, std::string op, ExprPtr b) {
    auto e = Make(Expr::Kind::kBinary);
    e->name = std::move(op);
    e->a = std::move(a);
    e->b = std::move(b);
    return e;
  }
  // One left-associative precedence level: operands from `next`, joined by
  // any of `ops` (operator tokens, or keywords such as "and" when `keywords`).
  using Level = absl::StatusOr<ExprPtr> (ExprParser::*)();
  absl::StatusOr<ExprPtr> LeftAssoc(Level next, std::initializer_list<std::string_view> ops, bool keywords = false) {
    DepthScope scope(this);
    auto a = (this->*next)();
    if (!a.ok()) return a;
    ExprPtr n = std::move(*a);
    for (;;) {
      std::string op;
      for (std::string_view o : ops) {
        if (keywords ? IsName(o) : IsOp(o)) {
          op = std::string(o);
          break;
        }
      }
      if (op.empty()) return n;
      if (absl::Status st = Deeper(); !st.ok()) return st;
      Next();
      auto b = (this->*next)();
      if (!b.ok()) return b;
      n = *Binary(std::move(n), op, std::move(*b));
    }
  }
  absl::StatusOr<ExprPtr> ParseOr() { return LeftAssoc(&ExprParser::ParseAnd, {"or"}, true); }
  absl::StatusOr<ExprPtr> ParseAnd() { return LeftAssoc(&ExprParser::ParseNot, {"and"}, true); }
  absl::StatusOr<ExprPtr> ParseNot() {
    DepthScope scope(this);
    if (IsName("not")) {
      if (absl::Status st = Deeper(); !st.ok()) return st;
      Next();
      auto a = ParseNot();
      if (!a.ok()) return a;
      auto e = Make(Expr::Kind::kUnary);
      e->name = "not";
      e->a = std::move(*a);
      return e;
    }
    return ParseCompare();
  }
  absl::StatusOr<ExprPtr> ParseCompare() {
    DepthScope scope(this);
    auto a = ParseMath1();
    if (!a.ok()) return a;
    ExprPtr n = std::move(*a);
    while (true) {
      std::string op;
      if (Peek().kind == Tok::Kind::kOp && (Peek().text == "==" || Peek().text == "!=" || Peek().text == "<" ||
                                           Peek().text == "<=" || Peek().text == ">" || Peek().text == ">=")) {
        op = Peek().text;
        Next();
      } else if (IsName("in")) {
        op = "in";
        Next();
      } else if (IsName("not") && IsName("in", 1)) {
        op = "not in";
        Next();
        Next();
      } else {
        break;
      }
      if (absl::Status st = Deeper(); !st.ok()) return st;
      auto b = ParseMath1();
      if (!b.ok()) return b;
      n = *Binary(std::move(n), op, std::move(*b));
    }
    return n;
  }
  // Jinja's order, loosest first: + and -, then ~, then * / // %, then **.
  absl::StatusOr<ExprPtr> ParseMath1() { return LeftAssoc(&ExprParser::ParseConcat, {"+", "-"}); }
  absl::StatusOr<ExprPtr> ParseConcat() { return LeftAssoc(&ExprParser::ParseMath2, {"~"}); }
  absl::StatusOr<ExprPtr> ParseMath2() { return LeftAssoc(&ExprParser::ParsePow, {"*", "/", "//", "%"}); }
  absl::StatusOr<ExprPtr> ParsePow() { return LeftAssoc(&ExprParser::ParseUnaryFiltered, {"**"}); }
  absl::StatusOr<ExprPtr> ParseUnaryFiltered() { return ParseUnary(true); }
  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter) {
    DepthScope scope(this);
    if (absl::Status st = Deeper(); !st.ok()) return st;
    ExprPtr n;
    if (IsOp("-") || IsOp("+")) {
      std::string op = Peek().text;
      Next();
      auto a = ParseUnary(false);
      if (!a.ok()) return a;
      n = Make(Expr::Kind::kUnary);
      n->name = op;
      n->a = std::move(*a);
    } else {
      auto a = ParsePrimary();
      if (!a.ok()) return a;
      n = std::move(*a);
    }
    auto post = ParsePostfix(std::move(n));
    if (!post.ok() || !with_filter) return post;
    return ParseFilterExpr(std::move(*post));
  }
  absl::Status ParseArgs(Expr* call) {
    // After '(' ... up to and including ')'.
    while (!IsOp(")")) {
      if (Peek().kind == Tok::Kind::kName && IsOp("=", 1)) {
        std::string key = Peek().text;
        Next();
        Next();
        auto v = ParseExpression();
        if (!v.ok()) return v.status();
        call->kwargs.emplace_back(std::move(key), std::move(*v));
      } else {
        if (!call->kwargs.empty()) return Err(line_, "positional argument after keyword argument");
        auto v = ParseExpression();
        if (!v.ok()) return v.status();
        call->items.push_back(std::move(*v));
      }
      if (IsOp(",")) Next();
      else if (!IsOp(")")) return Err(line_, absl::StrCat("expected ',' or ')' in call, got '", Describe(), "'"));
    }
    Next();
    return absl::OkStatus();
  }
  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr n) {
    DepthScope scope(this);
    while (true) {
      if (IsOp(".") || IsOp("[") || IsOp("(")) {
        if (absl::Status st = Deeper(); !st.ok()) return st;
      }
      if (IsOp(".")) {
        Next();
        auto name = ExpectName();
        if (!name.ok()) return name.status();
        auto e = Make(Expr::Kind::kGetAttr);
        e->a = std::move(n);
        e->name = *name;
        n = std::move(e);
      } else if (IsOp("[")) {
        Next();
        ExprPtr parts[3];
        int idx = 0;
        bool is_slice = false;
        while (!IsOp("]")) {
          if (IsOp(":")) {
            is_slice = true;
            if (++idx > 2) return Err(line_, "bad slice");
            Next();
            continue;
          }
          auto v = ParseExpression();
          if (!v.ok()) return v;
          if (parts[idx]) return Err(line_, "expected ']' in subscript");
          parts[idx] = std::move(*v);
        }
        Next();
        if (is_slice) {
          auto e = Make(Expr::Kind::kSlice);
          e->a = std::move(n);
          e->items.push_back(std::move(parts[0]));
          e->items.push_back(std::move(parts[1]));
          e->items.push_back(std::move(parts[2]));
          n = std::move(e);
        } else {
          if (!parts[0]) return Err(line_, "empty subscript");
          auto e = Make(Expr::Kind::kGetItem);
          e->a = std::move(n);
          e->b = std::move(parts[0]);
          n = std::move(e);
        }
      } else if (IsOp("(")) {
        auto c = ParseCall(std::move(n));
        if (!c.ok()) return c;
        n = std::move(*c);
      } else {
        return n;
      }
    }
  }
  // `callee(args)`, at the "(".
  absl::StatusOr<ExprPtr> ParseCall(ExprPtr callee) {
    Next();
    auto e = Make(Expr::Kind::kCall);
    e->a = std::move(callee);
    if (absl::Status s = ParseArgs(e.get()); !s.ok()) return s;
    return e;
  }
  // The "(args)" after a filter or test name, when there is one.
  absl::Status ParseOptionalArgs(Expr* e) {
    if (!IsOp("(")) return absl::OkStatus();
    Next();
    return ParseArgs(e);
  }
  absl::StatusOr<ExprPtr> ParseFilterExpr(ExprPtr n) {
    DepthScope scope(this);
    while (true) {
      if (IsOp("|") || IsName("is") || IsOp("(")) {
        if (absl::Status st = Deeper(); !st.ok()) return st;
      }
      if (IsOp("|")) {
        Next();
        auto name = ExpectName();
        if (!name.ok()) return name.status();
        auto e = Make(Expr::Kind::kFilter);
        e->a = std::move(n);
        e->name = *name;
        if (absl::Status s = ParseOptionalArgs(e.get()); !s.ok()) return s;
        n = std::move(e);
      } else if (IsName("is")) {
        Next();
        auto e = Make(Expr::Kind::kTest);
        if (IsName("not")) {
          e->negated = true;
          Next();
        }
        auto name = ExpectName();
        if (!name.ok()) return name.status();
        e->name = *name;
        e->a = std::move(n);
        if (IsOp("(")) {
          if (absl::Status s = ParseOptionalArgs(e.get()); !s.ok()) return s;
        } else if ((Peek().kind == Tok::Kind::kString || Peek().kind == Tok::Kind::kInt || Peek().kind == Tok::Kind::kFloat ||
                    (Peek().kind == Tok::Kind::kName && !IsName("else") && !IsName("or") && !IsName("and") && !IsName("if") && !IsName("in") && !IsName("not"))) ) {
          auto arg = ParsePrimary();
          if (!arg.ok()) return arg;
          e->items.push_back(std::move(*arg));
        }
        n = std::move(e);
      } else if (IsOp("(")) {
        auto c = ParseCall(std::move(n));
        if (!c.ok()) return c;
        n = std::move(*c);
      } else {
        return n;
      }
    }
  }
  absl::StatusOr<ExprPtr> ParsePrimary() {
    const Tok& t = Peek();
    if (t.kind == Tok::Kind::kName) {
      std::string n = t.text;
      Next();
      auto lit = Make(Expr::Kind::kLiteral);
      if (n == "true" || n == "True") { lit->value = Value::Bool(true); return lit; }
      if (n == "false" || n == "False") { lit->value = Value::Bool(false); return lit; }
      if (n == "none" || n == "None") { lit->value = Value::None(); return lit; }
      auto e = Make(Expr::Kind::kName);
      e->name = n;
      return e;
    }
    if (t.kind == Tok::Kind::kString) {
      std::string s;
      while (Peek().kind == Tok::Kind::kString) {  // adjacent literals concatenate
        s += Peek().value.AsString();
        Next();
      }
      auto lit = Make(Expr::Kind::kLiteral);
      lit->value = Value::Str(std::move(s));
      return lit;
    }
    if (t.kind == Tok::Kind::kInt || t.kind == Tok::Kind::kFloat) {
      auto lit = Make(Expr::Kind::kLiteral);
      lit->value = t.value;
      Next();
      return lit;
    }
    if (IsOp("(")) {
      Next();
      auto e = ParseExpression();
      if (!e.ok()) return e;
      if (IsOp(",")) return Err(line_, "tuples are not supported");
      absl::Status s = Expect(")");
      if (!s.ok()) return s;
      return e;
    }
    if (IsOp("[")) {
      Next();
      auto e = Make(Expr::Kind::kList);
      while (!IsOp("]")) {
        auto v = ParseExpression();
        if (!v.ok()) return v;
        e->items.push_back(std::move(*v));
        if (IsOp(",")) Next();
        else if (!IsOp("]")) return Err(line_, "expected ',' or ']' in list");
      }
      Next();
      return e;
    }
    if (IsOp("{")) {
      Next();
      auto e = Make(Expr::Kind::kDict);
      while (!IsOp("}")) {
        auto k = ParseExpression();
        if (!k.ok()) return k;
        absl::Status s = Expect(":");
        if (!s.ok()) return s;
        auto v = ParseExpression();
        if (!v.ok()) return v;
        e->items.push_back(std::move(*k));
        e->items.push_back(std::move(*v));
        if (IsOp(",")) Next();
        else if (!IsOp("}")) return Err(line_, "expected ',' or '}' in dict");
      }
      Next();
      return e;
    }
    return Err(line_, absl::StrCat("unexpected '", Describe(), "' in expression"));
  }

  std::vector<Tok> t_;
  size_t p_ = 0;
  int line_;
  int depth_ = 0;
};

// ---- stage 4: statements ---------------------------------------------------

class StmtParser {
 public:
  explicit StmtParser(std::vector<Chunk> chunks) : c_(std::move(chunks)) {}

  // Parses until a block tag whose first word is in `ends` (left unconsumed).
  absl::StatusOr<Body> ParseBody(const std::vector<std::string>& ends, std::string* end_word) {
    // Blocks nest at most kMaxNesting deep (the parser and renderer recurse per block).
    struct Scope {
      int& d;
      ~Scope() { --d; }
    } scope{++nest_};
    const int line = i_ < c_.size() ? c_[i_].line : 0;
    if (nest_ > kMaxNesting) return Err(line, absl::StrCat("blocks nested deeper than ", kMaxNesting, " levels"));
    Body body;
    while (i_ < c_.size()) {
      const Chunk& ch = c_[i_];
      if (ch.kind == Chunk::Kind::kText) {
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kText;
        s->text = ch.text;
        s->line = ch.line;
        body.push_back(std::move(s));
        ++i_;
        continue;
      }
      auto toks = Lex(ch.text, ch.line);
      if (!toks.ok()) return toks.status();
      ExprParser p(std::move(*toks), ch.line);
      if (ch.kind == Chunk::Kind::kVar) {
        auto e = p.ParseExpression();
        if (!e.ok()) return e.status();
        if (!p.AtEnd()) return Err(ch.line, absl::StrCat("unexpected '", p.Describe(), "' in {{ }}"));
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kOutput;
        s->expr = std::move(*e);
        s->line = ch.line;
        body.push_back(std::move(s));
        ++i_;
        continue;
      }
      auto word = p.ExpectName();
      if (!word.ok()) return Err(ch.line, "empty or malformed block tag");
      for (const auto& e : ends) {
        if (*word == e) {
          *end_word = *word;
          return body;
        }
      }
      ++i_;
      auto st = ParseStatement(*word, &p, ch.line);
      if (!st.ok()) return st.status();
      body.push_back(std::move(*st));
    }
    if (!ends.empty()) return Err(c_.empty() ? 1 : c_.back().line, absl::StrCat("missing {% ", ends.back(), " %}"));
    return body;
  }

  bool Done() const { return i_ >= c_.size(); }

 private:
  // Consumes the end tag found by ParseBody; returns its parser (for elif).
  absl::StatusOr<ExprParser> TakeEnd() {
    const Chunk& ch = c_[i_++];
    auto toks = Lex(ch.text, ch.line);
    if (!toks.ok()) return toks.status();
    ExprParser p(std::move(*toks), ch.line);
    p.Next();  // the end word
    return p;
  }

  absl::StatusOr<StmtPtr> ParseStatement(const std::string& word, ExprParser* p, int line) {
    auto s = std::make_unique<Stmt>();
    s->line = line;
    std::string end_word;
    if (word == "if") {
      s->kind = Stmt::Kind::kIf;
      auto cond = p->ParseExpression();
      if (!cond.ok()) return cond.status();
      if (!p->AtEnd()) return Err(line, absl::StrCat("unexpected '", p->Describe(), "' in {% if %}"));
      ExprPtr c = std::move(*cond);
      while (true) {
        auto body = ParseBody({"elif", "else", "endif"}, &end_word);
        if (!body.ok()) return body.status();
        s->branches.emplace_back(std::move(c), std::move(*body));
        auto endp = TakeEnd();
        if (!endp.ok()) return endp.status();
        if (end_word == "elif") {
          auto c2 = endp->ParseExpression();
          if (!c2.ok()) return c2.status();
          c = std::move(*c2);
          continue;
        }
        if (end_word == "else") {
          auto eb = ParseBody({"endif"}, &end_word);
          if (!eb.ok()) return eb.status();
          s->else_body = std::move(*eb);
          auto e2 = TakeEnd();
          if (!e2.ok()) return e2.status();
        }
        break;
      }
      return s;
    }
    if (word == "for") {
      s->kind = Stmt::Kind::kFor;
      while (true) {
        auto n = p->ExpectName();
        if (!n.ok()) return n.status();
        s->targets.push_back(*n);
        if (p->IsOp(",")) { p->Next(); continue; }
        break;
      }
      if (!p->IsName("in")) return Err(line, "expected 'in' in {% for %}");
      p->Next();
      auto it = p->ParseExpression(/*with_condexpr=*/false);
      if (!it.ok()) return it.status();
      s->expr = std::move(*it);
      if (p->IsName("if")) {
        p->Next();
        auto f = p->ParseExpression(false);
        if (!f.ok()) return f.status();
        s->filter = std::move(*f);
      }
      if (p->IsName("recursive")) return Err(line, "recursive for loops are not supported");
      if (!p->AtEnd()) return Err(line, absl::StrCat("unexpected '", p->Describe(), "' in {% for %}"));
      auto body = ParseBody({"else", "endfor"}, &end_word);
      if (!body.ok()) return body.status();
      s->body = std::move(*body);
      auto e = TakeEnd();
      if (!e.ok()) return e.status();
      if (end_word == "else") {
        auto eb = ParseBody({"endfor"}, &end_word);
        if (!eb.ok()) return eb.status();
        s->else_body = std::move(*eb);
        auto e2 = TakeEnd();
        if (!e2.ok()) return e2.status();
      }
      return s;
    }
    if (word == "set") {
      s->kind = Stmt::Kind::kSet;
      auto n = p->ExpectName();
      if (!n.ok()) return n.status();
      s->targets.push_back(*n);
      if (p->IsOp(".")) {
        p->Next();
        auto a = p->ExpectName();
        if (!a.ok()) return a.status();
        s->attr = *a;
      }
      if (p->IsOp(",")) return Err(line, "tuple assignment in {% set %} is not supported");
      if (p->IsOp("=")) {
        p->Next();
        auto v = p->ParseExpression();
        if (!v.ok()) return v.status();
        if (!p->AtEnd()) return Err(line, absl::StrCat("unexpected '", p->Describe(), "' in {% set %}"));
        s->expr = std::move(*v);
        return s;
      }
      if (!p->AtEnd()) return Err(line, "expected '=' in {% set %}");
      auto body = ParseBody({"endset"}, &end_word);  // block set
      if (!body.ok()) return body.status();
      s->body = std::move(*body);
      auto e = TakeEnd();
      if (!e.ok()) return e.status();
      return s;
    }
    if (word == "break" || word == "continue") {
      s->kind = word == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
      return s;
    }
    if (word == "generation") {  // transformers' assistant-mask extension: renders its body
      s->kind = Stmt::Kind::kBlock;
      auto body = ParseBody({"endgeneration"}, &end_word);
      if (!body.ok()) return body.status();
      s->body = std::move(*body);
      auto e = TakeEnd();
      if (!e.ok()) return e.status();
      return s;
    }
    return Err(line, absl::StrCat("unsupported or unexpected tag {% ", word, " %}"));
  }

  std::vector<Chunk> c_;
  size_t i_ = 0;
  int nest_ = 0;
};

}  // namespace

absl::StatusOr<Body> Parse(std::string_view source) {
  auto chunks = SplitChunks(source);
  if (!chunks.ok()) return chunks.status();
  StmtParser p(std::move(*chunks));
  std::string end_word;
  auto body = p.ParseBody({}, &end_word);
  if (!body.ok()) return body.status();
  if (!end_word.empty()) return Err(0, absl::StrCat("unexpected {% ", end_word, " %}"));
  return body;
}

}  // namespace gqa::jinja
