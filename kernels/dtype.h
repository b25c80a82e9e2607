// Element types as stored (DType, in op_types.h) and the scalar conversions
// between them and f32: what the interpreter, the checkpoint code and the
// samplers need without depending on a backend.
#pragma once

#include <cstdint>

#include "absl/strings/string_view.h"
#include "kernels/op_types.h"

namespace gqa {

absl::string_view DTypeName(DType t);

// One stored element of `data` (at `index`, in elements) widened to f32.
float LoadElement(const void* data, DType dtype, int64_t index);
uint16_t FloatToBf16(float f);  // round to nearest even
uint16_t FloatToF16(float f);   // round to nearest even
float Bf16ToFloat(uint16_t h);
float F16ToFloat(uint16_t h);

}  // namespace gqa
