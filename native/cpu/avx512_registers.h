// AVX-512 register helpers of the GEMM micro-kernels and their packing (the fp32 kernel set, the
// AVX512_BF16 and AMX bf16 paths): a 16x16 transpose and the store of a register tile's row.
#pragma once
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

namespace lt::cpu {

// A 16x16 transpose of 32-bit lanes: what GEMM packing uses to turn rows read along k into the
// panels the micro-kernels (and AMX tiles) read. r[0..15] = the transpose of the 16x16 block r[0..15]: lane j of r[i]
// moves to lane i of r[j].
__attribute__((target("avx512f"))) inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4)
    for (int h = 0; h < 2; ++h) {
      const __m512d a = _mm512_castps_pd(t[i + h]), b = _mm512_castps_pd(t[i + 2 + h]);
      r[i + 2 * h] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
      r[i + 2 * h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    }
  for (int i = 0; i < 16; i += 8)
    for (int h = 0; h < 4; ++h) {
      t[i + h] = _mm512_shuffle_f32x4(r[i + h], r[i + 4 + h], 0x88);
      t[i + 4 + h] = _mm512_shuffle_f32x4(r[i + h], r[i + 4 + h], 0xdd);
    }
  for (int h = 0; h < 8; ++h) {
    r[h] = _mm512_shuffle_f32x4(t[h], t[h + 8], 0x88);
    r[h + 8] = _mm512_shuffle_f32x4(t[h], t[h + 8], 0xdd);
  }
}

// row (32 floats) = alpha * (c0, c1) + beta * row, row not read when beta == 0: one row of a
// register tile of sums leaving for C.
__attribute__((target("avx512f"))) inline void store_tile_row(float* row, __m512 c0, __m512 c1, float alpha,
                                                              float beta) {
  const __m512 va = _mm512_set1_ps(alpha);
  if (beta == 0.0f) {
    _mm512_storeu_ps(row, _mm512_mul_ps(va, c0));
    _mm512_storeu_ps(row + 16, _mm512_mul_ps(va, c1));
  } else {
    const __m512 vb = _mm512_set1_ps(beta);
    _mm512_storeu_ps(row, _mm512_fmadd_ps(va, c0, _mm512_mul_ps(vb, _mm512_loadu_ps(row))));
    _mm512_storeu_ps(row + 16, _mm512_fmadd_ps(va, c1, _mm512_mul_ps(vb, _mm512_loadu_ps(row + 16))));
  }
}

}  // namespace lt::cpu
#endif
