// Warp-level tensor-core instructions (sm_80+): ldmatrix and mma.sync m16n8k16 with fp32
// accumulation, on 16-bit elements held two to a 32-bit register (the lower column in the low
// half). Fragment layouts, as the PTX ISA documents them (lane = 4 * group + thread_in_group):
// - A (16x16, row-major): a[0] = row group, columns 2 thread_in_group and +1; a[1] = row
//   group + 8, same columns; a[2], a[3] = as a[0], a[1], 8 columns on.
// - B (16x8, k by n): b[0] = rows 2 thread_in_group and +1 of column group; b[1] = 8 rows on.
// - C, D (16x8 fp32): c[0], c[1] = row group, columns 2 thread_in_group and +1; c[2], c[3] = row
//   group + 8.
// So two neighbouring 8-column C tiles, rounded to 16 bits, are the A fragment of their 16
// columns (flash attention's P reused as an operand without leaving registers).
// - ldmatrix x4: lanes 8j..8j+7 give the 16-byte rows of matrix j; register j of lane l holds
//   row l / 4, columns 2 (l % 4) and +1 (with .trans: column l / 4, rows 2 (l % 4) and +1).
// The CUDA test emulator runs a per-lane model of the same layouts.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "../dtype.h"

#ifdef LORA_TRAIN_CUDA_EMULATOR
#include <warp_matrix.h>
#endif

namespace lt::cuda {

// d = a b + d for one 16x8x16 tile; L is bf16 or f16.
template <DType L>
__device__ inline void mma_16x8x16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  static_assert(L == DType::bf16 || L == DType::f16, "mma_16x8x16 takes bf16 or fp16 operands");
#ifdef LORA_TRAIN_CUDA_EMULATOR
  const uint32_t b[2] = {b0, b1};
  lt_emu::mma_m16n8k16(d, a, b, d, L == DType::bf16);
#else
  if constexpr (L == DType::bf16)
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// Four 8x8 matrices of 16-bit elements from shared memory; `row` is this lane's row address.
template <bool Transposed>
__device__ inline void ldmatrix_x4(uint32_t (&r)[4], const uint16_t* row) {
#ifdef LORA_TRAIN_CUDA_EMULATOR
  lt_emu::ldmatrix_x4(r, row, Transposed);
#else
  const auto address = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  if constexpr (Transposed)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
#endif
}

// Two fp32 values rounded to L, packed as one register (lo in the low half).
template <DType L>
__device__ inline uint32_t pack2(float lo, float hi) {
#ifdef LORA_TRAIN_CUDA_EMULATOR
  return static_cast<uint32_t>(f32_to_lowp(lo, L)) | static_cast<uint32_t>(f32_to_lowp(hi, L)) << 16;
#else
  // One conversion instruction for both; the .x half is the low one.
  if constexpr (L == DType::bf16) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
#endif
}

}  // namespace lt::cuda
