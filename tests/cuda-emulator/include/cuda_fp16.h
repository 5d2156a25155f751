// fp16 for the CUDA test emulator (cuda_runtime.h): the compiler's _Float16 rounds to nearest,
// ties to even, as __float2half_rn.
#pragma once
#include "cuda_runtime.h"

struct __half {
  _Float16 value;
  operator float() const { return static_cast<float>(value); }  // NOLINT: as CUDA's
};

inline __half __float2half_rn(float f) { return {static_cast<_Float16>(f)}; }
