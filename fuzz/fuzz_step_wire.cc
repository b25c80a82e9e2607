// A step message from untrusted bytes (what an MPI rank receives): refused
// with a status, or a message that encodes back to exactly these bytes.
#include <cstring>

#include "fuzz/fuzz_util.h"
#include "worker/step_wire.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes = gqa::fuzz::AsText(data, size);
  absl::StatusOr<gqa::StepMessage> m = gqa::DecodeStepMessage(bytes);
  if (!m.ok()) return 0;
  const std::vector<char> again = m->kind == gqa::StepMessageKind::kStop
                                      ? gqa::EncodeStop()
                                      : gqa::EncodeStep(m->batch, m->has_sampling ? &m->sampling : nullptr,
                                                        m->want_logits);
  GQA_FUZZ_CHECK(again.size() == size && std::memcmp(again.data(), data, size) == 0);
  return 0;
}
