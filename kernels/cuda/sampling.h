// Host-side launchers of the kernels beside the logits (sampling.cu): the
// vocabulary slices joined into rows, and sampling. Pointers are device
// pointers; each returns the launch's error. Shapes follow the Backend ops
// of the same name.
#pragma once

#include <cstdint>

#include "kernels/cuda/cuda_compat.h"
#include "kernels/sampling_types.h"

namespace gqa::GQA_CUDA_NS {

// At most this many parts (col_begin is passed by value); more: invalid value.
constexpr int kMaxConcatParts = 64;
cudaError_t LaunchConcatColumns(const float* src, int parts, int64_t part_stride, const int64_t* col_begin, int rows,
                                float* dst, cudaStream_t s);
// One thread block per row; vocab in [1, 2^kMaxVocabBits].
cudaError_t LaunchSample(const float* logits, int rows, int vocab, const SamplingRow* params,
                         const PenaltyEntry* penalties, float* scratch, SampleOutput* out, cudaStream_t s);

}  // namespace gqa::GQA_CUDA_NS
