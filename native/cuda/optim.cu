// AdamW and global grad-norm clipping on the device.
#include <algorithm>
#include <cmath>
#include <vector>

#include "common.cuh"
#include "cuda_ops.h"

namespace lt::cuda {
namespace {

__global__ void adamw_kernel(float* p, float* m, float* v, const float* g, int64_t n, float lr, float beta1, float beta2,
                             float eps, float decay, float step_size, float bc2_sqrt) {
  LT_FOR(i, n) {
    const float gi = g[i];
    p[i] *= decay;
    m[i] += (gi - m[i]) * (1.0f - beta1);
    v[i] = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    p[i] -= step_size * m[i] / (sqrtf(v[i]) / bc2_sqrt + eps);
  }
}

__global__ void sum_squares_kernel(double* total, const float* g, int64_t n) {
  double s = 0.0;
  LT_FOR(i, n) s += (double)g[i] * g[i];
  s = block_sum_double(s);
  if (threadIdx.x == 0) atomicAdd(total, s);
}

__global__ void scale_kernel(float* g, float s, int64_t n) {
  LT_FOR(i, n) g[i] *= s;
}

}  // namespace

void CudaOps::adamw(const AdamWTensor* tensors, int64_t count, float lr, float beta1, float beta2, float eps,
                    float weight_decay, int64_t step) {
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  for (int64_t t = 0; t < count; ++t) {
    const AdamWTensor& x = tensors[t];
    adamw_kernel<<<blocks_for(x.n), kThreads>>>(x.param, x.exp_avg, x.exp_avg_sq, x.grad, x.n, lr, beta1, beta2, eps,
                                                1.0f - lr * weight_decay, static_cast<float>(lr / bc1),
                                                static_cast<float>(std::sqrt(bc2)));
  }
  LT_LAUNCHED("adamw");
}

double CudaOps::clip_grad_norm(float* const* grads, const int64_t* sizes, int64_t count, double max_norm) {
  double* total = nullptr;
  LT_CUDA(cudaMalloc(&total, sizeof(double)));
  LT_CUDA(cudaMemset(total, 0, sizeof(double)));
  for (int64_t t = 0; t < count; ++t) sum_squares_kernel<<<std::min<unsigned>(blocks_for(sizes[t]), 1024), kThreads>>>(total, grads[t], sizes[t]);
  cudaError_t launched = cudaGetLastError();
  double host = 0.0;
  cudaError_t copied = cudaMemcpy(&host, total, sizeof(double), cudaMemcpyDeviceToHost);
  cudaFree(total);
  check(launched, "clip_grad_norm");
  check(copied, "clip_grad_norm copy");
  const double norm = std::sqrt(host);
  if (max_norm > 0.0 && max_norm / (norm + 1e-6) < 1.0) {
    const float coef = static_cast<float>(max_norm / (norm + 1e-6));
    for (int64_t t = 0; t < count; ++t) scale_kernel<<<blocks_for(sizes[t]), kThreads>>>(grads[t], coef, sizes[t]);
    LT_LAUNCHED("clip_grad_norm scale");
  }
  return norm;
}

}  // namespace lt::cuda
