// config.json from untrusted bytes: refused with a status, or a config whose
// shape the engine can plan (heads divide, sizes positive).
#include "fuzz/fuzz_util.h"
#include "worker/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text = gqa::fuzz::AsText(data, size);
  auto c = gqa::ParseModelConfig(absl::string_view(text.data(), text.size()), "fuzz/config.json");
  if (c.ok()) {
    GQA_FUZZ_CHECK(c->num_q_heads > 0 && c->num_kv_heads > 0 && c->num_q_heads % c->num_kv_heads == 0);
    GQA_FUZZ_CHECK(c->hidden_size > 0 && c->head_dim > 0 && c->num_layers > 0 && c->vocab_size > 0);
  }
  return 0;
}
