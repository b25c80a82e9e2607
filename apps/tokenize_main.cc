// gqa-tokenize: encode, decode or render chat prompts with a Hugging Face
// tokenizer directory, one JSON object per line (stdin or --input-jsonl).
//   --tokenizer DIR --input-jsonl F            {"text": ...}     -> {"ids": [...]}
//   --decode                                   {"ids": [...]}    -> {"text": ...}
//   --chat                                     {"messages": [...], ...} -> {"text": ...}
// Options: --add-special-tokens (post-processor BOS/EOS), --special-as-text
// (special-token text in input stays text), --skip-special-tokens (decode),
// --no-generation-prompt (chat).
#include <fstream>
#include <iostream>
#include <string>

#include "nlohmann/json.hpp"
#include "tokenizer/tokenizer.h"

namespace {

int Usage() {
  std::cerr << "usage: gqa-tokenize --tokenizer DIR [--input-jsonl FILE] [--decode | --chat]\n"
               "       [--add-special-tokens] [--special-as-text] [--skip-special-tokens]\n"
               "       [--no-generation-prompt]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir, input;
  bool decode = false, chat = false, add_special = false, special_as_text = false, skip_special = false,
       generation_prompt = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--tokenizer" && i + 1 < argc) dir = argv[++i];
    else if (a == "--input-jsonl" && i + 1 < argc) input = argv[++i];
    else if (a == "--decode") decode = true;
    else if (a == "--chat") chat = true;
    else if (a == "--add-special-tokens") add_special = true;
    else if (a == "--special-as-text") special_as_text = true;
    else if (a == "--skip-special-tokens") skip_special = true;
    else if (a == "--no-generation-prompt") generation_prompt = false;
    else return Usage();
  }
  if (dir.empty() || (decode && chat)) return Usage();
  auto tok = gqa::Tokenizer::Load(dir);
  if (!tok.ok()) {
    std::cerr << "gqa-tokenize: " << tok.status() << "\n";
    return 1;
  }
  std::ifstream file;
  if (!input.empty()) {
    file.open(input);
    if (!file) {
      std::cerr << "gqa-tokenize: cannot open " << input << "\n";
      return 1;
    }
  }
  std::istream& in = input.empty() ? std::cin : file;
  std::string line;
  int lineno = 0, errors = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty()) continue;
    nlohmann::ordered_json j;
    try {
      j = nlohmann::ordered_json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      std::cerr << "line " << lineno << ": invalid JSON: " << e.what() << "\n";
      ++errors;
      continue;
    }
    nlohmann::ordered_json out;
    if (decode) {
      if (!j.contains("ids") || !j["ids"].is_array()) {
        std::cerr << "line " << lineno << ": expected {\"ids\": [...]}\n";
        ++errors;
        continue;
      }
      std::vector<gqa::TokenId> ids;
      bool ok = true;
      for (const auto& x : j["ids"]) {
        if (!x.is_number_integer()) ok = false;
        else ids.push_back(x.get<gqa::TokenId>());
      }
      auto text = ok ? (*tok)->Decode(ids, skip_special) : absl::InvalidArgumentError("ids must be integers");
      if (!text.ok()) {
        std::cerr << "line " << lineno << ": " << text.status() << "\n";
        ++errors;
        continue;
      }
      out["text"] = *text;
    } else if (chat) {
      if ((*tok)->chat_template() == nullptr) {
        std::cerr << "gqa-tokenize: " << dir << "/tokenizer_config.json has no chat_template\n";
        return 1;
      }
      nlohmann::ordered_json vars = j;
      if (!vars.contains("add_generation_prompt")) vars["add_generation_prompt"] = generation_prompt;
      auto text = (*tok)->ApplyChatTemplate(vars);
      if (!text.ok()) {
        std::cerr << "line " << lineno << ": " << text.status() << "\n";
        ++errors;
        continue;
      }
      out["text"] = *text;
    } else {
      if (!j.contains("text") || !j["text"].is_string()) {
        std::cerr << "line " << lineno << ": expected {\"text\": ...}\n";
        ++errors;
        continue;
      }
      gqa::EncodeOptions opts;
      opts.add_special_tokens = add_special;
      opts.parse_special_tokens = !special_as_text;
      auto ids = (*tok)->Encode(j["text"].get<std::string>(), opts);
      if (!ids.ok()) {
        std::cerr << "line " << lineno << ": " << ids.status() << "\n";
        ++errors;
        continue;
      }
      out["ids"] = *ids;
    }
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }
  return errors == 0 ? 0 : 1;
}
