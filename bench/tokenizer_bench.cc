// gqa-tokenizer-bench: single-threaded encode throughput on a JSONL corpus
// ({"text": ...} lines), for comparison with Hugging Face tokenizers.
//   gqa-tokenizer-bench --tokenizer DIR --corpus F [--repeat N]
// Reports a cold pass (empty word cache) and warm passes separately.
#include <chrono>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "tokenizer/tokenizer.h"

int main(int argc, char** argv) {
  std::string dir, corpus;
  int repeat = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--tokenizer" && i + 1 < argc) dir = argv[++i];
    else if (a == "--corpus" && i + 1 < argc) corpus = argv[++i];
    else if (a == "--repeat" && i + 1 < argc) repeat = std::stoi(argv[++i]);
    else {
      std::cerr << "usage: gqa-tokenizer-bench --tokenizer DIR --corpus F [--repeat N]\n";
      return 2;
    }
  }
  auto tok = gqa::Tokenizer::Load(dir);
  if (!tok.ok()) {
    std::cerr << tok.status() << "\n";
    return 1;
  }
  std::vector<std::string> texts;
  std::ifstream f(corpus);
  std::string line;
  size_t bytes = 0;
  while (std::getline(f, line)) {
    if (line.empty()) continue;
    texts.push_back(nlohmann::json::parse(line)["text"].get<std::string>());
    bytes += texts.back().size();
  }
  gqa::EncodeOptions opts;
  opts.parse_special_tokens = true;  // as HF's encode() does
  auto run = [&]() {
    size_t n = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (const auto& t : texts) n += (*tok)->Encode(t, opts)->size();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return std::make_pair(s, n);
  };
  (*tok)->ClearCache();
  auto [cold_s, tokens] = run();
  double best = 1e30;
  for (int r = 0; r < repeat; ++r) best = std::min(best, run().first);
  std::cout << "{\"tokenizer\": \"" << dir << "\", \"texts\": " << texts.size() << ", \"bytes\": " << bytes
            << ", \"tokens\": " << tokens << ", \"cold_s\": " << cold_s << ", \"warm_best_s\": " << best
            << ", \"warm_MB_per_s\": " << bytes / best / 1e6 << "}\n";
  return 0;
}
