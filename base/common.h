// The project's lowest vocabulary: invariant checks and Status helpers.
// Every room may include this; it includes nothing of the project.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace gqa {

[[noreturn]] void CheckFailed(const char* file, int line, const char* expr, const char* msg);

}  // namespace gqa

// Broken invariants (programming errors), never bad user input.
#define GQA_CHECK(cond, msg)                                                                  \
  do {                                                                                        \
    if (!(cond)) ::gqa::CheckFailed(__FILE__, __LINE__, #cond, msg);                          \
  } while (0)

#define GQA_STATUS_CONCAT_INNER(a, b) a##b
#define GQA_STATUS_CONCAT(a, b) GQA_STATUS_CONCAT_INNER(a, b)

#define RETURN_IF_ERROR(expr)                  \
  do {                                         \
    ::absl::Status _gqa_status = (expr);       \
    if (!_gqa_status.ok()) return _gqa_status; \
  } while (0)

#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL(GQA_STATUS_CONCAT(_gqa_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.status();         \
  lhs = std::move(tmp).value()
