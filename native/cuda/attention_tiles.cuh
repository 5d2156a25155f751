// What both flash-attention kernels (WMMA and mma.sync) share: head dim and tile size, and the
// loading of a tile of one head's rows into shared memory in the 16-bit compute type.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "common.cuh"

namespace lt::cuda {

// Head dim, rows per tile, and the 16-bit tiles' row stride in elements: 144 bytes, so eight
// rows' first words fall in eight different groups of four banks.
constexpr int kD = 64, kTile = 64, kLdh = kD + 8, kFlashThreads = 128;

template <typename T>
__device__ inline T to_lowp(float x);
template <>
__device__ inline __nv_bfloat16 to_lowp<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ inline __half to_lowp<__half>(float x) {
  return __float2half_rn(x);
}

// Four consecutive elements of x from element i: one 16-byte (fp32) or 8-byte (bf16/fp16) load.
__device__ inline float4 load4(TensorRef x, int64_t i) {
  if (x.type == DType::f32) return *reinterpret_cast<const float4*>(static_cast<const float*>(x.data) + i);
  const ushort4 h = *reinterpret_cast<const ushort4*>(static_cast<const uint16_t*>(x.data) + i);
  return make_float4(lowp_to_f32(h.x, x.type), lowp_to_f32(h.y, x.type), lowp_to_f32(h.z, x.type),
                     lowp_to_f32(h.w, x.type));
}

// rows [r0, r0 + kTile) of the head starting at element `head` of x (row stride ld, any
// storage type) into a (kTile, kLdh) tile rounded to T; rows at or past `rows` are zero.
template <typename T>
__device__ inline void load_tile(T* tile, TensorRef x, int64_t head, int64_t ld, int64_t r0, int64_t rows) {
  for (int i = threadIdx.x; i < kTile * kD / 4; i += blockDim.x) {
    const int r = i / (kD / 4), c = (i % (kD / 4)) * 4;
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (r0 + r < rows) v = load4(x, head + (r0 + r) * ld + c);
    T* t = tile + r * kLdh + c;
    t[0] = to_lowp<T>(v.x);
    t[1] = to_lowp<T>(v.y);
    t[2] = to_lowp<T>(v.z);
    t[3] = to_lowp<T>(v.w);
  }
}

// The flash kernels in attention_mma.cu (tensor-core mma.sync, sm_80+). T is __nv_bfloat16 or
// __half; dq, dk, dv are added to. delta (B, H, N) = rowsum(dout * o).
template <typename T>
void flash_mma_forward(TensorOut o, float* lse, TensorRef q, TensorRef k, TensorRef v, int64_t B, int64_t N, int64_t M,
                       int64_t H, float scale);
template <typename T>
void flash_mma_backward(float* dq, float* dk, float* dv, TensorRef dout, TensorRef q, TensorRef k, TensorRef v,
                        const float* lse, const float* delta, int64_t B, int64_t N, int64_t M, int64_t H, float scale);

}  // namespace lt::cuda
