#pragma once
#include <cstdint>

namespace lt::cuda {
// C = alpha op(A) op(B) + beta C on the device (gemm.cu).
void gemm_device(float* C, const float* A, const float* B, int64_t M, int64_t N, int64_t K, bool transA,
                 bool transB, float alpha, float beta, int64_t lda, int64_t ldb, int64_t ldc);
}  // namespace lt::cuda
