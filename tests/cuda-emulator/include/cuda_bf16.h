// bf16 for the CUDA test emulator (cuda_runtime.h): storage plus the conversions native/cuda uses.
#pragma once
#include "cuda_runtime.h"

struct __nv_bfloat16 {
  unsigned short bits;
  operator float() const { return __uint_as_float(static_cast<unsigned>(bits) << 16); }  // NOLINT: as CUDA's
};

// Round to nearest, ties to even; a NaN stays a quiet NaN.
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  unsigned u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return {static_cast<unsigned short>((u >> 16) | 0x40u)};
  const unsigned lsb = (u >> 16) & 1u;
  return {static_cast<unsigned short>((u + 0x7fffu + lsb) >> 16)};
}
