// AdamW over many tensors in one call, and global gradient-norm clipping.
#include <cmath>
#include <vector>

#include "cpu_ops.h"
#include "profile.h"
#include "thread_pool.h"

namespace lt::cpu {

void CpuOps::adamw(const AdamWTensor* tensors, int64_t count, float lr, float beta1, float beta2, float eps,
                   float weight_decay, int64_t step, float grad_scale) {
  LT_CPU_PROFILE("adamw");
  // torch.optim.AdamW: p *= 1 - lr wd; m = lerp(m, g, 1 - b1); v = b2 v + (1 - b2) g^2;
  // p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps).
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  const float step_size = static_cast<float>(lr / bc1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  const float decay = 1.0f - lr * weight_decay;
  for (int64_t t = 0; t < count; ++t) {
    const AdamWTensor& x = tensors[t];
    parallel_range(x.n, 1 << 14, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const float g = x.grad[i] * grad_scale;
        x.param[i] *= decay;
        x.exp_avg[i] += (g - x.exp_avg[i]) * (1.0f - beta1);
        x.exp_avg_sq[i] = beta2 * x.exp_avg_sq[i] + (1.0f - beta2) * g * g;
        const float denom = std::sqrt(x.exp_avg_sq[i]) / bc2_sqrt + eps;
        x.param[i] -= step_size * x.exp_avg[i] / denom;
      }
    });
  }
}

double CpuOps::clip_grad_norm(float* const* grads, const int64_t* sizes, int64_t count, double max_norm) {
  LT_CPU_PROFILE("clip_grad_norm");
  double sum_sq = 0.0;
  for (int64_t t = 0; t < count; ++t)
    for (int64_t i = 0; i < sizes[t]; ++i) sum_sq += static_cast<double>(grads[t][i]) * grads[t][i];
  const double norm = std::sqrt(sum_sq);
  if (max_norm > 0.0) {
    const double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0)
      for (int64_t t = 0; t < count; ++t)
        for (int64_t i = 0; i < sizes[t]; ++i) grads[t][i] *= static_cast<float>(coef);
  }
  return norm;
}

}  // namespace lt::cpu
