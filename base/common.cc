#include "base/common.h"

namespace gqa {

void CheckFailed(const char* file, int line, const char* expr, const char* msg) {
  std::fprintf(stderr, "%s:%d: check failed: %s: %s\n", file, line, expr, msg);
  std::fflush(stderr);
  std::abort();
}

}  // namespace gqa
