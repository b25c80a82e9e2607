// The body of POST /v1/completions (first byte even) or
// /v1/chat/completions (odd), taken as the HTTP server takes it: the depth
// limit, the JSON parser, the field readers, the chat template, then the
// tokenizer and the sampling checks a request meets before it is queued.
// Every outcome is an answer (a BadField, a status) or a request; nothing
// else may happen.
#include "fuzz/fuzz_server.h"
#include "fuzz/fuzz_util.h"
#include "server/http_request.h"
#include "engine/sampler.h"
#include "base/json_depth.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  gqa::Frontend& fe = gqa::fuzz::SharedFrontend();
  const bool chat = data[0] % 2 == 1;
  const std::string body(gqa::fuzz::AsText(data + 1, size - 1));
  if (gqa::JsonDeeperThan(body)) return 0;
  nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return 0;
  gqa::http_request::GenerateBody g;
  try {
    if (!gqa::http_request::ParseGenerateBody(j, chat, fe, &g).ok()) return 0;
  } catch (const gqa::http_request::BadField& b) {
    GQA_FUZZ_CHECK(!b.message.empty());
    return 0;
  }
  gqa::ApiRequest& r = g.request;
  if (r.prompt_text) {
    auto ids = fe.Tokenize(*r.prompt_text, r.add_special_tokens, r.parse_special_tokens, r.literal_ranges);
    if (!ids.ok()) return 0;
  }
  (void)gqa::ValidateSamplingParams(r.gen.sampling, fe.info().vocab_size);
  return 0;
}
