// Portable kernels: plain C++ the compiler may vectorise for the baseline ISA. Also the path
// for CPUs without AVX2/FMA and for non-x86 builds.
#include <algorithm>
#include <cmath>

#include "kernels.h"

namespace lt::cpu {
namespace {

constexpr int kMR = 4, kNR = 8;

void gemm_tile_generic(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc,
                       float alpha, float beta) {
  float acc[kMR][kNR] = {};
  for (int64_t p = 0; p < kc; ++p, Ap += kMR, Bp += kNR)
    for (int i = 0; i < kMR; ++i)
      for (int j = 0; j < kNR; ++j) acc[i][j] += Ap[i] * Bp[j];
  for (int i = 0; i < kMR; ++i)
    for (int j = 0; j < kNR; ++j)
      C[i * ldc + j] = beta == 0.0f ? alpha * acc[i][j] : alpha * acc[i][j] + beta * C[i * ldc + j];
}

float row_max_generic(const float* x, int64_t n) {
  float m = -INFINITY;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, x[i]);
  return m;
}

float exp_shift_sum_generic(float* x, int64_t n, float shift) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += (x[i] = std::exp(x[i] - shift));
  return sum;
}

}  // namespace

const KernelSet kGenericKernels = {"generic", kMR, kNR, 128, 256, 4096, gemm_tile_generic,
                                   row_max_generic, exp_shift_sum_generic};

}  // namespace lt::cpu
