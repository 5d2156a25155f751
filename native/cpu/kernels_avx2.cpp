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

float row_max_avx2(const float* x, int64_t n) {
  __m256 m = _mm256_set1_ps(-__builtin_inff());
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m);
  float r = lanes[0];
  for (int j = 1; j < 8; ++j) r = r > lanes[j] ? r : lanes[j];
  for (; i < n; ++i) r = r > x[i] ? r : x[i];
  return r;
}

float exp_shift_sum_avx2(float* x, int64_t n, float shift) {
  const __m256 vshift = _mm256_set1_ps(shift);
  __m256 sum = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 e = exp_ps_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), vshift));
    _mm256_storeu_ps(x + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  if (i < n) {  // pad the tail with -inf, whose exp adds nothing
    alignas(32) float tail[8];
    for (int j = 0; j < 8; ++j) tail[j] = i + j < n ? x[i + j] : -__builtin_inff();
    __m256 e = exp_ps_avx2(_mm256_sub_ps(_mm256_load_ps(tail), vshift));
    _mm256_store_ps(tail, e);
    for (int64_t j = i; j < n; ++j) x[j] = tail[j - i];
    sum = _mm256_add_ps(sum, e);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, sum);
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

}  // namespace

const KernelSet kAvx2Kernels = {"avx2", kMR, kNR, 96, 768, 4080, gemm_tile_avx2, row_max_avx2, exp_shift_sum_avx2};

}  // namespace lt::cpu
