// Syntax tree of the Jinja subset: expressions and statements.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tokenizer/jinja/jinja_value.h"

namespace gqa::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,    // value
    kName,       // name
    kList,       // items
    kDict,       // keys (string literals or exprs in items[2k]) / values items[2k+1]
    kGetAttr,    // a.name
    kGetItem,    // a[b]
    kSlice,      // a[b:c:d], missing parts are null
    kCall,       // a(args, kwargs): a is kName (global) or kGetAttr (method)
    kFilter,     // a | name(args, kwargs)
    kTest,       // a is [not] name(args)
    kUnary,      // op a   ("not", "-", "+")
    kBinary,     // a op b
    kCondition,  // b if a else c   (a = cond, b = then, c = else; c may be null)
  } kind;
  int line = 0;
  Value value;
  std::string name;  // Name, attribute, filter/test name, operator
  bool negated = false;
  ExprPtr a, b, c;
  std::vector<ExprPtr> items;  // list items, call/filter/test positional args
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct Stmt {
  enum class Kind {
    kText,      // text
    kOutput,    // {{ expr }}
    kIf,        // branches: (cond, body)...; else_body
    kFor,       // targets in expr [if filter] body [else else_body]
    kSet,       // target(.attr) = expr, or block set (body)
    kBreak,
    kContinue,
    kBlock,     // body only (e.g. transformers' {% generation %})
  } kind;
  int line = 0;
  std::string text;
  ExprPtr expr;                                       // Output / For iterable / Set value
  ExprPtr filter;                                     // For ... if filter
  std::vector<std::string> targets;                   // For / Set targets
  std::string attr;                                   // Set ns.attr
  std::vector<std::pair<ExprPtr, Body>> branches;     // If
  Body body, else_body;
};

}  // namespace gqa::jinja
