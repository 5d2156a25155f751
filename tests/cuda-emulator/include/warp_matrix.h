// The warp-level matrix instructions native/cuda issues as inline PTX (ldmatrix, mma.sync
// m16n8k16), modelled lane by lane for the CUDA test emulator. Unlike the WMMA model (mma.h),
// each lane holds only the registers the PTX ISA gives it, so a kernel that puts an element in
// the wrong lane or register half computes wrong numbers here as it would on a GPU.
//
// The layouts, as the PTX ISA documents them (lane = 4 * group + thread_in_group):
// - mma.m16n8k16 A (16x16, .row), eight 16-bit elements a0..a7 in four registers, low half first:
//   row = group (+ 8 for a2, a3, a6, a7), col = 2 * thread_in_group + (i & 1) (+ 8 for a4..a7).
// - B (16x8, .col), b0..b3 in two registers: row = 2 * thread_in_group + (i & 1) (+ 8 for b2,
//   b3), col = group.
// - C and D (16x8, fp32), c0..c3: row = group (+ 8 for c2, c3), col = 2 * thread_in_group + (i & 1).
// - ldmatrix.m8n8.x4.b16: lanes 8j..8j+7 give the addresses of matrix j's eight rows (16 bytes
//   each, 16-byte aligned, in shared memory); register j of lane l holds matrix j's row l / 4,
//   columns 2 (l % 4) and 2 (l % 4) + 1. With .trans, the transposed matrix's: column l / 4,
//   rows 2 (l % 4) and 2 (l % 4) + 1.
#pragma once
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include "cuda_runtime.h"

namespace lt_emu {

inline float b16_value(uint32_t reg, int half, bool bf16) {
  const auto bits = static_cast<uint16_t>(half ? reg >> 16 : reg & 0xffffu);
  if (bf16) return __uint_as_float(static_cast<uint32_t>(bits) << 16);
  _Float16 h;
  std::memcpy(&h, &bits, 2);
  return static_cast<float>(h);
}

// d = a b + c for the warp, each lane giving and getting its documented fragments. Products and
// sums in fp32, in k order (the tensor cores' order differs).
inline void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4],
                         bool bf16) {
  struct Registers {
    uint32_t a[4], b[2];
    float c[4];
  } mine{};
  std::memcpy(mine.a, a, sizeof mine.a);
  std::memcpy(mine.b, b, sizeof mine.b);
  std::memcpy(mine.c, c, sizeof mine.c);
  static_assert(sizeof(Registers) <= kMaxExchangeBytes);
  sync_warp(&mine, sizeof mine);
  float A[16][16], B[16][8], C[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    Registers r;
    exchanged_value(lane, &r, sizeof r);
    const int group = lane >> 2, t = lane % 4;
    for (int i = 0; i < 8; ++i)
      A[group + (i & 2 ? 8 : 0)][2 * t + (i & 1) + (i >= 4 ? 8 : 0)] = b16_value(r.a[i / 2], i % 2, bf16);
    for (int i = 0; i < 4; ++i) B[2 * t + (i & 1) + (i >= 2 ? 8 : 0)][group] = b16_value(r.b[i / 2], i % 2, bf16);
    for (int i = 0; i < 4; ++i) C[group + (i >= 2 ? 8 : 0)][2 * t + (i & 1)] = r.c[i];
  }
  const int group = lane_id() >> 2, t = lane_id() % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = group + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
    float s = C[row][col];
    for (int k = 0; k < 16; ++k) s += A[row][k] * B[k][col];
    d[i] = s;
  }
}

inline void ldmatrix_x4(uint32_t (&r)[4], const void* row, bool trans) {
  if (reinterpret_cast<uintptr_t>(row) % 16 != 0) throw std::logic_error("ldmatrix: a row address not 16-byte aligned");
  check_in_shared(row, 16, "ldmatrix");
  sync_warp(&row, sizeof row);
  const int l = lane_id();
  auto element = [&](int matrix, int row_in, int col) {
    const void* p;
    exchanged_value(8 * matrix + row_in, &p, sizeof p);
    uint16_t bits;
    std::memcpy(&bits, static_cast<const unsigned char*>(p) + 2 * col, 2);
    return static_cast<uint32_t>(bits);
  };
  for (int j = 0; j < 4; ++j)
    r[j] = trans ? element(j, 2 * (l % 4), l / 4) | element(j, 2 * (l % 4) + 1, l / 4) << 16
                 : element(j, l / 4, 2 * (l % 4)) | element(j, l / 4, 2 * (l % 4) + 1) << 16;
}

}  // namespace lt_emu
