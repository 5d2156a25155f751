// AVX-512 kernels (compiled with -mavx512f -mavx512dq -mavx512bw -mavx512vl -mfma; only called
// after cpuid says so).
#include <immintrin.h>

#include "kernels.h"
#include "vector_exp.h"

namespace lt::cpu {
namespace {

constexpr int kMR = 12, kNR = 32;  // 24 zmm accumulators + 2 B vectors + 1 broadcast

void gemm_tile_avx512(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc,
                      float alpha, float beta) {
  __m512 c[kMR][2];
#pragma GCC unroll 12
  for (int i = 0; i < kMR; ++i) c[i][0] = c[i][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < kc; ++p, Ap += kMR, Bp += kNR) {
    __m512 b0 = _mm512_load_ps(Bp), b1 = _mm512_load_ps(Bp + 16);
#pragma GCC unroll 12
    for (int i = 0; i < kMR; ++i) {
      __m512 a = _mm512_set1_ps(Ap[i]);
      c[i][0] = _mm512_fmadd_ps(a, b0, c[i][0]);
      c[i][1] = _mm512_fmadd_ps(a, b1, c[i][1]);
    }
  }
  __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 12
  for (int i = 0; i < kMR; ++i) {
    float* row = C + i * ldc;
    if (beta == 0.0f) {
      _mm512_storeu_ps(row, _mm512_mul_ps(va, c[i][0]));
      _mm512_storeu_ps(row + 16, _mm512_mul_ps(va, c[i][1]));
    } else {
      _mm512_storeu_ps(row, _mm512_fmadd_ps(va, c[i][0], _mm512_mul_ps(vb, _mm512_loadu_ps(row))));
      _mm512_storeu_ps(row + 16, _mm512_fmadd_ps(va, c[i][1], _mm512_mul_ps(vb, _mm512_loadu_ps(row + 16))));
    }
  }
}

float row_max_avx512(const float* x, int64_t n) {
  __m512 m = _mm512_set1_ps(-__builtin_inff());
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
  if (i < n) {
    __mmask16 k = static_cast<__mmask16>((1u << (n - i)) - 1);
    m = _mm512_mask_max_ps(m, k, m, _mm512_maskz_loadu_ps(k, x + i));
  }
  return _mm512_reduce_max_ps(m);
}

float exp_shift_sum_avx512(float* x, int64_t n, float shift) {
  const __m512 vshift = _mm512_set1_ps(shift);
  __m512 sum = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 e = exp_ps_avx512(_mm512_sub_ps(_mm512_loadu_ps(x + i), vshift));
    _mm512_storeu_ps(x + i, e);
    sum = _mm512_add_ps(sum, e);
  }
  if (i < n) {
    __mmask16 k = static_cast<__mmask16>((1u << (n - i)) - 1);
    __m512 e = exp_ps_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), vshift));
    _mm512_mask_storeu_ps(x + i, k, e);
    sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(k, e));
  }
  return _mm512_reduce_add_ps(sum);
}

}  // namespace

const KernelSet kAvx512Kernels = {"avx512", kMR, kNR, 96, 768, 4096, gemm_tile_avx512,
                                  row_max_avx512, exp_shift_sum_avx512};

}  // namespace lt::cpu
