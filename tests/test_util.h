// Helpers shared by the test suites.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/common.h"

namespace gqa::testing {

inline std::string FixturePath(const std::string& rel) {
  return (std::filesystem::path(GQA_FIXTURES_DIR) / rel).string();
}

// A fresh empty directory under the test temp dir.
inline std::string TempDir(const std::string& name) {
  const auto info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::filesystem::path p = std::filesystem::path(::testing::TempDir()) / "gqa_tests" /
                            (std::string(info->test_suite_name()) + "." + info->name()) / name;
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

inline std::vector<std::string>& DirsToRemoveAtExit() {
  static std::vector<std::string>* dirs = [] {
    auto* v = new std::vector<std::string>();
    std::atexit([] {
      for (const std::string& d : DirsToRemoveAtExit()) std::filesystem::remove_all(d);
    });
    return v;
  }();
  return *dirs;
}

// A directory private to this process, removed at exit: ctest runs test
// cases in parallel processes, and rewriting a file another process has
// mapped would crash it.
inline std::string ProcessTempDir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/" + name + "_" + std::to_string(getpid());
  DirsToRemoveAtExit().push_back(d);
  return d;
}

#define ASSERT_OK(expr)                                   \
  do {                                                    \
    const ::absl::Status _s = (expr);                     \
    ASSERT_TRUE(_s.ok()) << _s;                           \
  } while (0)

#define ASSERT_OK_AND_ASSIGN(lhs, expr)                   \
  ASSERT_OK_AND_ASSIGN_IMPL(GQA_STATUS_CONCAT(_t_, __LINE__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL(tmp, lhs, expr)         \
  auto tmp = (expr);                                      \
  ASSERT_TRUE(tmp.ok()) << tmp.status();                  \
  lhs = std::move(tmp).value()

}  // namespace gqa::testing
