// The wire format of one step under mpirun: rank 0 encodes each step (or the
// order to stop) and broadcasts the bytes; every other rank decodes them and
// runs the same step on its shard. Plain bytes in the host's byte order
// (every rank of a job runs the same build on the same architecture).
// Decoding checks the framing only (lengths, kinds, no bytes left over); the
// model validates the content as it does for a local step.
#pragma once

#include <string_view>
#include <vector>

#include "base/common.h"
#include "worker/step_batch.h"

namespace gqa {

enum class StepMessageKind : int32_t { kStep = 1, kStop = 2 };

struct StepMessage {
  StepMessageKind kind = StepMessageKind::kStep;
  StepBatch batch;
  bool has_sampling = false;
  StepSampling sampling;  // when has_sampling
  bool want_logits = false;
};

// A step; sampling may be null (no sampling on the device).
std::vector<char> EncodeStep(const StepBatch& batch, const StepSampling* sampling, bool want_logits);
// The order to leave the step loop.
std::vector<char> EncodeStop();

// The message in `bytes`, or InvalidArgument when they are not one.
absl::StatusOr<StepMessage> DecodeStepMessage(std::string_view bytes);

}  // namespace gqa
