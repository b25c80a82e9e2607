// A gqa.v1.GenerateRequest message as it arrives on the wire, checked and
// converted as the gRPC service does, then the sampling checks.
#include "fuzz/fuzz_util.h"
#include "server/grpc_server.h"
#include "engine/sampler.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto r = gqa::DecodeGenerateRequest(std::string(gqa::fuzz::AsText(data, size)), 256);
  if (!r.ok()) return 0;
  GQA_FUZZ_CHECK(r->gen.max_tokens >= 1 && r->gen.max_tokens <= 256);
  GQA_FUZZ_CHECK(!(r->prompt_text.has_value() && !r->prompt_ids.empty()));  // one prompt, text or ids
  (void)gqa::ValidateSamplingParams(r->gen.sampling, 300);
  return 0;
}
