// AVX2 + FMA kernels (compiled with -mavx2 -mfma; only called after cpuid says so).
#include <immintrin.h>

#include "kernels.h"
#include "vector_exp.h"

namespace lt::cpu {
namespace {

constexpr int kMR = 6, kNR = 16;  // 12 ymm accumulators + 2 B vectors + 1 broadcast

void gemm_tile_avx2(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc,
                    float alpha, float beta) {
  __m256 c[kMR][2];
#pragma GCC unroll 6
  for (int i = 0; i < kMR; ++i) c[i][0] = c[i][1] = _mm256_setzero_ps();
  for (int64_t p = 0; p < kc; ++p, Ap += kMR, Bp += kNR) {
    __m256 b0 = _mm256_load_ps(Bp), b1 = _mm256_load_ps(Bp + 8);
#pragma GCC unroll 6
    for (int i = 0; i < kMR; ++i) {
      __m256 a = _mm256_broadcast_ss(Ap + i);
      c[i][0] = _mm256_fmadd_ps(a, b0, c[i][0]);
      c[i][1] = _mm256_fmadd_ps(a, b1, c[i][1]);
    }
  }
  __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
#pragma GCC unroll 6
  for (int i = 0; i < kMR; ++i) {
    float* row = C + i * ldc;
    if (beta == 0.0f) {
      _mm256_storeu_ps(row, _mm256_mul_ps(va, c[i][0]));
      _mm256_storeu_ps(row + 8, _mm256_mul_ps(va, c[i][1]));
    } else {
      _mm256_storeu_ps(row, _mm256_fmadd_ps(va, c[i][0], _mm256_mul_ps(vb, _mm256_loadu_ps(row))));
      _mm256_storeu_ps(row + 8, _mm256_fmadd_ps(va, c[i][1], _mm256_mul_ps(vb, _mm256_loadu_ps(row + 8))));
    }
  }
}

void exp_inplace_avx2(float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, exp_ps_avx2(_mm256_loadu_ps(x + i)));
  if (i < n) {
    float tail[8] = {};
    for (int64_t j = i; j < n; ++j) tail[j - i] = x[j];
    _mm256_storeu_ps(tail, exp_ps_avx2(_mm256_loadu_ps(tail)));
    for (int64_t j = i; j < n; ++j) x[j] = tail[j - i];
  }
}

}  // namespace

const KernelSet kAvx2Kernels = {"avx2", kMR, kNR, 144, 256, 4080, gemm_tile_avx2, exp_inplace_avx2};

}  // namespace lt::cpu
