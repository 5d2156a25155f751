// fp32 GEMM with transposes, strides, alpha and beta: a shared-memory tiled kernel (64x64 tile,
// 16-deep K chunks, 4x4 outputs per thread). Right first; cuBLASLt with TF32/bf16 comes next.
#include "common.cuh"
#include "cuda_ops.h"

namespace lt::cuda {
namespace {

constexpr int kTile = 64, kDepth = 16, kPer = 4;

__global__ void gemm_kernel(float* C, const float* A, const float* B, int64_t M, int64_t N, int64_t K,
                            bool transA, bool transB, float alpha, float beta, int64_t lda, int64_t ldb,
                            int64_t ldc) {
  __shared__ float As[kDepth][kTile + 1];  // op(A)[m, k] at As[k][m]
  __shared__ float Bs[kDepth][kTile + 1];  // op(B)[k, n] at Bs[k][n]
  const int64_t row0 = blockIdx.y * (int64_t)kTile, col0 = blockIdx.x * (int64_t)kTile;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;  // 16 x 16 threads, 4 x 4 outputs each
  float acc[kPer][kPer] = {};
  for (int64_t k0 = 0; k0 < K; k0 += kDepth) {
    for (int i = threadIdx.x; i < kDepth * kTile; i += blockDim.x) {
      const int kk = i / kTile, mm = i % kTile;
      const int64_t m = row0 + mm, k = k0 + kk;
      As[kk][mm] = (m < M && k < K) ? (transA ? A[k * lda + m] : A[m * lda + k]) : 0.0f;
      const int64_t n = col0 + mm;
      Bs[kk][mm] = (n < N && k < K) ? (transB ? B[n * ldb + k] : B[k * ldb + n]) : 0.0f;
    }
    __syncthreads();
    for (int kk = 0; kk < kDepth; ++kk) {
      float a[kPer], b[kPer];
      for (int i = 0; i < kPer; ++i) a[i] = As[kk][ty * kPer + i];
      for (int j = 0; j < kPer; ++j) b[j] = Bs[kk][tx * kPer + j];
      for (int i = 0; i < kPer; ++i)
        for (int j = 0; j < kPer; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
  for (int i = 0; i < kPer; ++i)
    for (int j = 0; j < kPer; ++j) {
      const int64_t m = row0 + ty * kPer + i, n = col0 + tx * kPer + j;
      if (m < M && n < N) {
        float* c = C + m * ldc + n;
        *c = beta == 0.0f ? alpha * acc[i][j] : alpha * acc[i][j] + beta * *c;
      }
    }
}

__global__ void scale_kernel(float* C, int64_t M, int64_t N, int64_t ldc, float beta) {
  LT_FOR(i, M * N) {
    float* c = C + (i / N) * ldc + (i % N);
    *c = beta == 0.0f ? 0.0f : beta * *c;
  }
}

}  // namespace

void gemm_device(float* C, const float* A, const float* B, int64_t M, int64_t N, int64_t K, bool transA,
                 bool transB, float alpha, float beta, int64_t lda, int64_t ldb, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.0f) {
    scale_kernel<<<blocks_for(M * N), kThreads>>>(C, M, N, ldc, beta);
    LT_LAUNCHED("gemm (scale)");
    return;
  }
  dim3 grid(static_cast<unsigned>((N + kTile - 1) / kTile), static_cast<unsigned>((M + kTile - 1) / kTile));
  gemm_kernel<<<grid, 256>>>(C, A, B, M, N, K, transA, transB, alpha, beta, lda, ldb, ldc);
  LT_LAUNCHED("gemm");
}

void CudaOps::gemm(float* C, const float* A, const float* B, int64_t M, int64_t N, int64_t K, bool transA,
                   bool transB, float alpha, float beta, int64_t lda, int64_t ldb, int64_t ldc) {
  gemm_device(C, A, B, M, N, K, transA, transB, alpha, beta, lda, ldb, ldc);
}

}  // namespace lt::cuda
