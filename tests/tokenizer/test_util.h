// Helpers shared by the tokenizer tests: fixture paths and JSONL reading.
#pragma once

#include <fstream>
#include <map>
#include <set>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tokenizer/tokenizer.h"

namespace gqa::testing {

inline std::string TokenizerDir(const std::string& name) { return std::string(GQA_TOKENIZER_DIR) + "/" + name; }
inline std::string FixturePath(const std::string& file) { return std::string(GQA_TOKENIZER_FIXTURES) + "/" + file; }

inline std::vector<nlohmann::ordered_json> ReadJsonl(const std::string& path) {
  std::vector<nlohmann::ordered_json> out;
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << "cannot open " << path;
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) out.push_back(nlohmann::ordered_json::parse(line));
  return out;
}

inline std::string ReadText(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Loads once per process; the real files are large (up to 11 MB).
inline const Tokenizer& LoadShared(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto it = cache.find(name);
  if (it == cache.end()) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> tok;
    auto variants = nlohmann::json::parse(ReadText(FixturePath("variants.json")));
    if (variants.contains(name)) {
      // A real tokenizer.json with components replaced (see variants.json).
      const std::string base = variants[name]["base"];
      auto j = nlohmann::json::parse(ReadText(TokenizerDir(base) + "/tokenizer.json"));
      for (auto& [key, value] : variants[name]["override"].items()) j[key] = value;
      tok = Tokenizer::FromJson(j.dump(), ReadText(TokenizerDir(base) + "/tokenizer_config.json"));
    } else {
      tok = Tokenizer::Load(TokenizerDir(name));
    }
    if (!tok.ok()) {
      ADD_FAILURE() << "loading " << TokenizerDir(name) << ": " << tok.status();
      std::abort();
    }
    it = cache.emplace(name, std::move(*tok)).first;
  }
  return *it->second;
}

}  // namespace gqa::testing
