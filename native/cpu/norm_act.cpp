// LayerNorm (no affine), GELU (exact erf), SiLU, LeakyReLU, GlobalResponseNorm and MSE loss,
// forward and backward side by side. Channels last throughout.
#include <cmath>
#include <vector>

#include "cpu_ops.h"
#include "kernels.h"
#include "profile.h"
#include "thread_pool.h"

namespace lt::cpu {
namespace {

constexpr int64_t kElementwiseChunk = 1 << 14;

template <typename F>
void elementwise(int64_t n, F f) {
  parallel_range(n, kElementwiseChunk, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) f(i);
  });
}

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

}  // namespace

void CpuOps::layernorm_forward(TensorOut y, float* mean, float* rstd, const float* x, int64_t rows, int64_t C,
                               float eps) {
  LT_CPU_PROFILE("layernorm_forward");
  parallel_range(rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * C;
      double sum = 0.0;
      for (int64_t c = 0; c < C; ++c) sum += xr[c];
      const float m = static_cast<float>(sum / C);
      double var = 0.0;  // two passes: no cancellation for large means
      for (int64_t c = 0; c < C; ++c) {
        const float dx = xr[c] - m;
        var += static_cast<double>(dx) * dx;
      }
      const float s = static_cast<float>(1.0 / std::sqrt(var / C + eps));
      thread_local std::vector<float> row;  // (C) the normalised row when y is stored narrower
      if (y.type != DType::f32) row.resize(C);
      float* yr = y.type == DType::f32 ? y.f32() + r * C : row.data();
      for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - m) * s;
      if (y.type != DType::f32) store_values(y, r * C, yr, C);
      mean[r] = m;
      rstd[r] = s;
    }
  });
}

void CpuOps::layernorm_affine_forward(float* y, const float* x, const float* weight, const float* bias, int64_t rows,
                                      int64_t C, float eps) {
  LT_CPU_PROFILE("layernorm_affine_forward");
  std::vector<float> mean(rows), rstd(rows);
  layernorm_forward(y, mean.data(), rstd.data(), x, rows, C, eps);
  parallel_range(rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = 0; c < C; ++c) y[r * C + c] = y[r * C + c] * weight[c] + bias[c];
  });
}

void CpuOps::layernorm_backward(float* dx, const float* dy, const float* x, const float* mean, const float* rstd,
                                int64_t rows, int64_t C) {
  LT_CPU_PROFILE("layernorm_backward");
  // dx = rstd * (dy - mean(dy) - xhat * mean(dy * xhat))
  parallel_range(rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * C;
      const float* dyr = dy + r * C;
      const float m = mean[r], s = rstd[r];
      double sum_dy = 0.0, sum_dy_xhat = 0.0;
      for (int64_t c = 0; c < C; ++c) {
        sum_dy += dyr[c];
        sum_dy_xhat += static_cast<double>(dyr[c]) * ((xr[c] - m) * s);
      }
      const float mean_dy = static_cast<float>(sum_dy / C);
      const float mean_dy_xhat = static_cast<float>(sum_dy_xhat / C);
      float* dxr = dx + r * C;
      for (int64_t c = 0; c < C; ++c) dxr[c] += s * (dyr[c] - mean_dy - (xr[c] - m) * s * mean_dy_xhat);
    }
  });
}

void CpuOps::gelu_forward(float* y, const float* x, int64_t n) {
  LT_CPU_PROFILE("gelu_forward");
  const KernelSet& ks = active_kernels();
  parallel_range(n, kElementwiseChunk, [&](int64_t i0, int64_t i1) { ks.gelu_forward(y + i0, x + i0, i1 - i0); });
}

void CpuOps::gelu_backward(float* dx, const float* dy, const float* x, int64_t n) {
  LT_CPU_PROFILE("gelu_backward");
  const KernelSet& ks = active_kernels();
  parallel_range(n, kElementwiseChunk,
                 [&](int64_t i0, int64_t i1) { ks.gelu_backward(dx + i0, dy + i0, x + i0, i1 - i0); });
}

void CpuOps::quick_gelu_forward(float* y, const float* x, int64_t n) {
  LT_CPU_PROFILE("quick_gelu_forward");
  elementwise(n, [&](int64_t i) { y[i] = x[i] * sigmoid(1.702f * x[i]); });
}

void CpuOps::sigmoid_forward(float* y, const float* x, int64_t n) {
  LT_CPU_PROFILE("sigmoid_forward");
  const KernelSet& ks = active_kernels();
  parallel_range(n, kElementwiseChunk, [&](int64_t i0, int64_t i1) { ks.sigmoid(y + i0, x + i0, i1 - i0, false); });
}

void CpuOps::silu_forward(float* y, const float* x, int64_t n) {
  LT_CPU_PROFILE("silu_forward");
  const KernelSet& ks = active_kernels();
  parallel_range(n, kElementwiseChunk, [&](int64_t i0, int64_t i1) { ks.sigmoid(y + i0, x + i0, i1 - i0, true); });
}

void CpuOps::silu_backward(float* dx, const float* dy, const float* x, int64_t n) {
  LT_CPU_PROFILE("silu_backward");
  elementwise(n, [&](int64_t i) {
    const float s = sigmoid(x[i]);
    dx[i] += dy[i] * s * (1.0f + x[i] * (1.0f - s));
  });
}

void CpuOps::leaky_relu_forward(float* y, const float* x, float slope, int64_t n) {
  LT_CPU_PROFILE("leaky_relu_forward");
  elementwise(n, [&](int64_t i) { y[i] = x[i] > 0.0f ? x[i] : slope * x[i]; });
}

void CpuOps::leaky_relu_backward(float* dx, const float* dy, const float* x, float slope, int64_t n) {
  LT_CPU_PROFILE("leaky_relu_backward");
  elementwise(n, [&](int64_t i) { dx[i] += x[i] > 0.0f ? dy[i] : slope * dy[i]; });
}

namespace {
// g (C) = L2 norm over positions of u (P, C) for one batch item, in double.
void grn_channel_norms(std::vector<double>& g, const float* u, int64_t P, int64_t C) {
  g.assign(C, 0.0);
  for (int64_t p = 0; p < P; ++p)
    for (int64_t c = 0; c < C; ++c) g[c] += static_cast<double>(u[p * C + c]) * u[p * C + c];
  for (auto& v : g) v = std::sqrt(v);
}
double mean_of(const std::vector<double>& v) {
  double s = 0.0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}
}  // namespace

void CpuOps::grn_forward(float* y, const float* u, const float* gamma, const float* beta, int64_t B, int64_t P,
                         int64_t C, float eps) {
  LT_CPU_PROFILE("grn_forward");
  parallel_for(B, [&](int64_t b) {
    const float* ub = u + b * P * C;
    float* yb = y + b * P * C;
    std::vector<double> g;
    grn_channel_norms(g, ub, P, C);
    const double denom = mean_of(g) + eps;
    std::vector<float> gain(C);  // gamma * nx + 1, so y = u * gain + beta
    for (int64_t c = 0; c < C; ++c) gain[c] = static_cast<float>(gamma[c] * (g[c] / denom) + 1.0);
    for (int64_t p = 0; p < P; ++p)
      for (int64_t c = 0; c < C; ++c) yb[p * C + c] = ub[p * C + c] * gain[c] + beta[c];
  });
}

void CpuOps::grn_backward(float* du, float* dgamma, float* dbeta, const float* dy, const float* u, const float* gamma,
                          int64_t B, int64_t P, int64_t C, float eps) {
  LT_CPU_PROFILE("grn_backward");
  // y_pc = gamma_c u_pc nx_c + beta_c + u_pc with nx_c = g_c / (mean(g) + eps), g_c = ||u_:c||.
  // With s_c = gamma_c sum_p dy_pc u_pc:
  //   dL/dg_c = s_c / D - (sum_k s_k g_k) / (C D^2),  D = mean(g) + eps
  //   du_pc   = dy_pc (gamma_c nx_c + 1) + dL/dg_c * u_pc / g_c   (0 where g_c = 0, as torch)
  std::vector<std::vector<double>> dgamma_parts(B, std::vector<double>(dgamma ? C : 0));
  parallel_for(B, [&](int64_t b) {
    const float* ub = u + b * P * C;
    const float* dyb = dy + b * P * C;
    std::vector<double> g, dy_u(C, 0.0);
    grn_channel_norms(g, ub, P, C);
    const double D = mean_of(g) + eps;
    for (int64_t p = 0; p < P; ++p)
      for (int64_t c = 0; c < C; ++c) dy_u[c] += static_cast<double>(dyb[p * C + c]) * ub[p * C + c];
    if (dgamma)
      for (int64_t c = 0; c < C; ++c) dgamma_parts[b][c] = dy_u[c] * (g[c] / D);
    if (!du) return;
    double sum_sg = 0.0;
    for (int64_t c = 0; c < C; ++c) sum_sg += gamma[c] * dy_u[c] * g[c];
    std::vector<float> gain(C), coef(C);
    for (int64_t c = 0; c < C; ++c) {
      gain[c] = static_cast<float>(gamma[c] * (g[c] / D) + 1.0);
      const double dg = gamma[c] * dy_u[c] / D - sum_sg / (static_cast<double>(C) * D * D);
      coef[c] = g[c] > 0.0 ? static_cast<float>(dg / g[c]) : 0.0f;
    }
    float* dub = du + b * P * C;
    for (int64_t p = 0; p < P; ++p)
      for (int64_t c = 0; c < C; ++c) dub[p * C + c] += dyb[p * C + c] * gain[c] + coef[c] * ub[p * C + c];
  });
  if (dgamma)
    for (int64_t c = 0; c < C; ++c) {
      double s = 0.0;
      for (int64_t b = 0; b < B; ++b) s += dgamma_parts[b][c];
      dgamma[c] += static_cast<float>(s);
    }
  if (dbeta) {
    std::vector<double> s(C, 0.0);
    for (int64_t i = 0; i < B * P; ++i)
      for (int64_t c = 0; c < C; ++c) s[c] += dy[i * C + c];
    for (int64_t c = 0; c < C; ++c) dbeta[c] += static_cast<float>(s[c]);
  }
}

double CpuOps::mse_loss(float* dpred, const float* pred, const float* target, int64_t n, float grad_scale) {
  LT_CPU_PROFILE("mse_loss");
  const int threads = num_threads();
  std::vector<double> partial(threads, 0.0);
  const int64_t step = (n + threads - 1) / threads;
  const float g = 2.0f * grad_scale / static_cast<float>(n);
  parallel_for(threads, [&](int64_t t) {
    double sum = 0.0;
    for (int64_t i = t * step, end = std::min(n, i + step); i < end; ++i) {
      const float diff = pred[i] - target[i];
      sum += static_cast<double>(diff) * diff;
      if (dpred) dpred[i] += g * diff;
    }
    partial[t] = sum;
  });
  double total = 0.0;
  for (double p : partial) total += p;
  return n > 0 ? total / static_cast<double>(n) : 0.0;
}

}  // namespace lt::cpu

namespace lt::cpu {

// The CPU composes the fused ops from the reference ones (the fusion is a GPU memory-traffic
// saving; here it would only duplicate code).
void CpuOps::gelu_grn_forward(TensorOut y, TensorRef u, const float* gamma, const float* beta, int64_t B, int64_t P,
                              int64_t C, float eps) {
  LT_CPU_PROFILE("gelu_grn_forward");
  Scratch scratch(*this);
  float* g = scratch.alloc(B * P * C);  // (B, P, C)
  if (u.type != DType::f32) {           // widen in place, then GELU
    convert(g, DType::f32, u, B * P * C);
    gelu_forward(g, g, B * P * C);
  } else {
    gelu_forward(g, u.f32(), B * P * C);
  }
  if (y.type == DType::f32) return grn_forward(y.f32(), g, gamma, beta, B, P, C, eps);
  grn_forward(g, g, gamma, beta, B, P, C, eps);  // in place: then rounded once
  convert(y.data, y.type, g, B * P * C);
}

void CpuOps::gelu_grn_backward(float* du, const float* dy, TensorRef u, const float* gamma, int64_t B, int64_t P,
                               int64_t C, float eps) {
  LT_CPU_PROFILE("gelu_grn_backward");
  const int64_t n = B * P * C;
  Scratch scratch(*this);
  const float* u32 = u.f32();  // (B, P, C): u in fp32, widened when it is stored narrower
  if (u.type != DType::f32) {
    float* widened = scratch.alloc(n);
    convert(widened, DType::f32, u, n);
    u32 = widened;
  }
  float* g = scratch.alloc(n);   // (B, P, C)
  float* dg = scratch.alloc(n);  // (B, P, C)
  zero(dg, n);
  gelu_forward(g, u32, n);
  grn_backward(dg, nullptr, nullptr, dy, g, gamma, B, P, C, eps);
  gelu_backward(du, dg, u32, n);
}

void CpuOps::modulate_layernorm_forward(float* y, TensorOut normed, float* mean, float* rstd, const float* x,
                                        const float* ab, int64_t B, int64_t P, int64_t C, float eps) {
  LT_CPU_PROFILE("modulate_layernorm_forward");
  modulate_forward(y, x, ab, B, P, C);
  layernorm_forward(normed, mean, rstd, y, B * P, C, eps);
}

}  // namespace lt::cpu
