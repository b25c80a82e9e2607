// A chat template (up to the first NUL byte) compiled and rendered with the
// variables that follow it (JSON, when they parse and nest no deeper than
// the server allows), or with a fixed conversation. Refused with a status,
// or rendered within the template engine's limits.
#include "fuzz/fuzz_util.h"
#include "nlohmann/json.hpp"
#include "tokenizer/chat_template.h"
#include "base/json_depth.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view all = gqa::fuzz::AsText(data, size);
  const size_t nul = all.find('\0');
  auto t = gqa::ChatTemplate::Compile(all.substr(0, nul));
  if (!t.ok()) return 0;
  nlohmann::ordered_json vars = {
      {"messages", {{{"role", "system"}, {"content", "Be brief."}},
                    {{"role", "user"}, {"content", "Hi <s>"}},
                    {{"role", "assistant"}, {"content", "Hello."}}}},
      {"add_generation_prompt", true},
      {"bos_token", "<s>"},
      {"eos_token", "</s>"}};
  if (nul != std::string_view::npos) {
    const std::string extra(all.substr(nul + 1));
    if (!gqa::JsonDeeperThan(extra)) {
      nlohmann::ordered_json j = nlohmann::ordered_json::parse(extra, nullptr, /*allow_exceptions=*/false);
      if (j.is_object()) vars.update(j);
    }
  }
  (void)(*t)->Render(vars);
  return 0;
}
