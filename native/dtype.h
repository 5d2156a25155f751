// Storage types for tensors and the conversions between them, shared by every backend so a
// value rounds to the same bits on the CPU and the GPU. Arithmetic is always fp32 (or wider):
// bf16 and fp16 are storage formats for frozen weights and GEMM operands in mixed precision.
#pragma once
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "host_device.h"

namespace lt {

enum class DType : int32_t { f32 = 0, bf16 = 1, f16 = 2 };

LT_HOST_DEVICE inline int64_t dtype_size(DType t) { return t == DType::f32 ? 4 : 2; }
inline const char* dtype_name(DType t) { return t == DType::f32 ? "f32" : t == DType::bf16 ? "bf16" : "f16"; }
// "f32" | "bf16" | "f16"; false for anything else.
inline bool parse_dtype(const std::string& s, DType* out) {
  if (s == "f32") return *out = DType::f32, true;
  if (s == "bf16") return *out = DType::bf16, true;
  if (s == "f16") return *out = DType::f16, true;
  return false;
}

LT_HOST_DEVICE inline uint32_t float_bits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
LT_HOST_DEVICE inline float bits_float(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

LT_HOST_DEVICE inline float bf16_to_f32(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

// Round to nearest, ties to even (as PyTorch's .to(torch.bfloat16)); NaN stays a quiet NaN.
// Written as a select, not a branch, so that loops over it vectorise.
LT_HOST_DEVICE inline uint16_t f32_to_bf16(float f) {
  const uint32_t u = float_bits(f);
  const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>(nan ? (u >> 16) | 0x40u : rounded);
}

LT_HOST_DEVICE inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0) {  // zero or subnormal: man * 2^-24, exact in fp32
    const float v = static_cast<float>(man) * 5.9604644775390625e-8f;
    return bits_float(float_bits(v) | sign);
  }
  if (exp == 31) return bits_float(sign | 0x7f800000u | (man << 13));
  return bits_float(sign | ((exp + 112u) << 23) | (man << 13));
}

// Round to nearest, ties to even; beyond the largest half (65504) rounds to infinity.
LT_HOST_DEVICE inline uint16_t f32_to_f16(float f) {
  uint32_t x = float_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) return static_cast<uint16_t>(sign | (x > 0x7f800000u ? 0x7e00u : 0x7c00u));
  if (x >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520
  if (x < 0x38800000u) {                                      // below 2^-14: a subnormal half (units of 2^-24) or zero
    if (x < 0x33000000u) return static_cast<uint16_t>(sign);  // <= 2^-25 rounds to zero
    const uint32_t e = x >> 23, m = (x & 0x7fffffu) | 0x800000u, shift = 126u - e;
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return static_cast<uint16_t>(sign | r);
  }
  x -= 112u << 23;  // rebias the exponent from 127 to 15
  return static_cast<uint16_t>(sign | ((x + 0xfffu + ((x >> 13) & 1u)) >> 13));
}

LT_HOST_DEVICE inline float lowp_to_f32(uint16_t h, DType t) {
  return t == DType::bf16 ? bf16_to_f32(h) : f16_to_f32(h);
}
LT_HOST_DEVICE inline uint16_t f32_to_lowp(float f, DType t) {
  return t == DType::bf16 ? f32_to_bf16(f) : f32_to_f16(f);
}

// The type both GEMM operands are read in: fp32 when both are fp32, else the low-precision
// one's (an fp32 operand is rounded to it). Two different low-precision types are refused.
inline DType gemm_operand_type(DType a, DType b) {
  if (a != DType::f32 && b != DType::f32 && a != b)
    throw std::invalid_argument(std::string("GEMM operands must share one low-precision type, got ") + dtype_name(a) +
                                " and " + dtype_name(b));
  return a != DType::f32 ? a : b;
}

// A read-only tensor of any storage type. A float pointer converts to it implicitly, so ops
// that take one accept fp32 buffers as before. Usable in host and device code alike.
struct TensorRef {
  const void* data;
  DType type;
  LT_HOST_DEVICE TensorRef(const float* p) : data(p), type(DType::f32) {}        // NOLINT: implicit on purpose
  LT_HOST_DEVICE TensorRef(std::nullptr_t) : data(nullptr), type(DType::f32) {}  // NOLINT
  LT_HOST_DEVICE TensorRef(const void* p, DType t) : data(p), type(t) {}
  LT_HOST_DEVICE const float* f32() const { return static_cast<const float*>(data); }
  LT_HOST_DEVICE const uint16_t* lowp() const { return static_cast<const uint16_t*>(data); }
  // Element i as fp32.
  LT_HOST_DEVICE float at(int64_t i) const { return type == DType::f32 ? f32()[i] : lowp_to_f32(lowp()[i], type); }
  // The tensor from element n on.
  LT_HOST_DEVICE TensorRef from(int64_t n) const {
    return {static_cast<const char*>(data) + n * dtype_size(type), type};
  }
};

// A written tensor of any storage type; a float pointer converts to it implicitly. An op
// writing bf16/fp16 computes in fp32 and rounds once on the way out.
struct TensorOut {
  void* data;
  DType type;
  LT_HOST_DEVICE TensorOut(float* p) : data(p), type(DType::f32) {}              // NOLINT: implicit on purpose
  LT_HOST_DEVICE TensorOut(std::nullptr_t) : data(nullptr), type(DType::f32) {}  // NOLINT
  LT_HOST_DEVICE TensorOut(void* p, DType t) : data(p), type(t) {}
  LT_HOST_DEVICE float* f32() const { return static_cast<float*>(data); }
  // Element i = v, rounded to the storage type.
  LT_HOST_DEVICE void set(int64_t i, float v) const {
    if (type == DType::f32)
      f32()[i] = v;
    else
      static_cast<uint16_t*>(data)[i] = f32_to_lowp(v, type);
  }
};

}  // namespace lt
