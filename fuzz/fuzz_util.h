// Shared pieces of the libFuzzer targets (see fuzz/README.md).
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>

namespace gqa::fuzz {

inline std::string_view AsText(const uint8_t* data, size_t size) {
  return std::string_view(reinterpret_cast<const char*>(data), size);
}

// A private directory for the files a target must write (removed at exit
// by the operating system's tmp cleaning; each process makes its own).
inline const std::string& ScratchDir() {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/gqa_fuzz_XXXXXX";
    const char* d = mkdtemp(tmpl);
    if (d == nullptr) {
      std::perror("mkdtemp");
      std::abort();
    }
    return std::string(d);
  }();
  return dir;
}

inline void WriteFile(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A failed invariant: libFuzzer records the input that caused it.
#define GQA_FUZZ_CHECK(cond)                                                      \
  do {                                                                            \
    if (!(cond)) {                                                                \
      std::fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                               \
    }                                                                             \
  } while (0)

}  // namespace gqa::fuzz
