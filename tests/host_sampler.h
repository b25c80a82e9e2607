// The host Sampler's choice on host logits: its NextRow, then the CPU
// backend's sampling op on one row. Tests compare the device's choice and
// the engine's tokens with it.
#pragma once

#include <utility>
#include <vector>

#include "engine/sampler.h"
#include "kernels/cpu/cpu_kernels.h"

namespace gqa {

template <typename S>
SampledToken SampleOnHost(S&& sampler, const float* logits, int vocab, const std::vector<int32_t>& context,
                          int prompt_len) {
  std::vector<PenaltyEntry> penalties;
  const SamplingRow row = sampler.NextRow(context, prompt_len, &penalties);
  std::vector<float> work(vocab);
  SampleOutput out;
  cpu::SampleRow(logits, vocab, row, penalties.data(), work.data(), &out);
  return Sampler::ToToken(out);
}

}  // namespace gqa
