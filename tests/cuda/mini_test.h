// A small test harness for the CUDA tests, which must build where there is
// no GoogleTest (a lent GPU machine may have only CUDA, CMake and a
// compiler). TEST_CASE registers a test; CHECK records a failure and goes on;
// REQUIRE ends the test; SKIP ends it as skipped with a reason. main() runs
// the tests whose name contains argv[1] (all without one) and closes with
// "N passed, N failed, N skipped"; it exits 1 on a failure and 77 when every
// test skipped.
#pragma once

#include <cstdio>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace mini_test {

struct Case {
  const char* name;
  std::function<void()> fn;
};

inline std::vector<Case>& Registry() {
  static std::vector<Case> cases;
  return cases;
}

struct Registrar {
  Registrar(const char* name, std::function<void()> fn) { Registry().push_back({name, std::move(fn)}); }
};

struct Failed {};
struct Skipped {
  std::string why;
};

inline int& FailureCount() {
  static int n = 0;
  return n;
}

inline void Fail(const char* file, int line, const std::string& what) {
  ++FailureCount();
  std::fprintf(stderr, "%s:%d: failure: %s\n", file, line, what.c_str());
}

inline int RunAll(int argc, char** argv) {
  const std::string filter = argc > 1 ? argv[1] : "";
  int passed = 0, failed = 0, skipped = 0;
  for (const Case& c : Registry()) {
    if (!filter.empty() && std::string(c.name).find(filter) == std::string::npos) continue;
    const int before = FailureCount();
    std::string skip;
    try {
      c.fn();
    } catch (const Failed&) {
    } catch (const Skipped& s) {
      skip = s.why;
    }
    if (FailureCount() != before) {
      ++failed;
      std::printf("[FAIL] %s\n", c.name);
    } else if (!skip.empty()) {
      ++skipped;
      std::printf("[SKIP] %s: %s\n", c.name, skip.c_str());
    } else {
      ++passed;
      std::printf("[ OK ] %s\n", c.name);
    }
    std::fflush(stdout);
  }
  std::printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
  if (failed > 0) return 1;
  return passed == 0 && skipped > 0 ? 77 : 0;
}

}  // namespace mini_test

#define MT_CONCAT_INNER(a, b) a##b
#define MT_CONCAT(a, b) MT_CONCAT_INNER(a, b)
#define TEST_CASE(name)                                                        \
  static void name();                                                          \
  static ::mini_test::Registrar MT_CONCAT(registrar_, name)(#name, &name);     \
  static void name()

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) ::mini_test::Fail(__FILE__, __LINE__, "CHECK(" #cond ")");    \
  } while (0)
#define CHECK_MSG(cond, msg)                                                   \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::ostringstream mt_os;                                                \
      mt_os << "CHECK(" #cond "): " << msg;                                    \
      ::mini_test::Fail(__FILE__, __LINE__, mt_os.str());                      \
    }                                                                          \
  } while (0)
#define REQUIRE(cond)                                                          \
  do {                                                                         \
    if (!(cond)) {                                                             \
      ::mini_test::Fail(__FILE__, __LINE__, "REQUIRE(" #cond ")");             \
      throw ::mini_test::Failed{};                                             \
    }                                                                          \
  } while (0)
#define REQUIRE_OK(expr)                                                       \
  do {                                                                         \
    const ::absl::Status mt_st = (expr);                                       \
    if (!mt_st.ok()) {                                                         \
      ::mini_test::Fail(__FILE__, __LINE__, std::string(#expr ": ") + std::string(mt_st.message())); \
      throw ::mini_test::Failed{};                                             \
    }                                                                          \
  } while (0)
#define SKIP(why) throw ::mini_test::Skipped{why}
