// LayerNorm (no affine), GELU (exact erf), SiLU, LeakyReLU, GlobalResponseNorm and MSE loss,
// forward and backward side by side. Channels last throughout.
#include <algorithm>
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
// Positions per task of the GRN sums. Each task sums whole rows (memory read in order), and the
// tasks' partial sums are added in a fixed order: the result does not depend on the thread
// count, and a batch of one still spreads over every core.
constexpr int64_t kGrnRows = 32;

// Per (batch, channel): uu = sum_p u^2 and, when dy is given, dyu = sum_p dy u, returned in double.
void grn_sums(double* uu, double* dyu, const float* u, const float* dy, int64_t B, int64_t P, int64_t C) {
  const int64_t blocks = (P + kGrnRows - 1) / kGrnRows, width = dy ? 2 * C : C;
  std::vector<double> partial(B * blocks * width, 0.0);  // (B, blocks, [uu | dyu] C)
  parallel_for(B * blocks, [&](int64_t task) {
    const int64_t b = task / blocks, p0 = task % blocks * kGrnRows, p1 = std::min(P, p0 + kGrnRows);
    // A task's few rows are summed in float (four lanes a vector in the baseline instruction set,
    // against two in double), the tasks joined in double.
    thread_local std::vector<float> run;  // (width) [uu | dyu]
    run.assign(width, 0.0f);
    float *su = run.data(), *sd = su + C;
    for (int64_t p = p0; p < p1; ++p) {
      const float* row = u + (b * P + p) * C;  // (C)
      for (int64_t c = 0; c < C; ++c) su[c] += row[c] * row[c];
      if (!dy) continue;
      const float* drow = dy + (b * P + p) * C;  // (C)
      for (int64_t c = 0; c < C; ++c) sd[c] += drow[c] * row[c];
    }
    std::copy(run.begin(), run.end(), partial.begin() + task * width);
  });
  for (int64_t b = 0; b < B; ++b) {
    std::fill(uu + b * C, uu + (b + 1) * C, 0.0);
    if (dy) std::fill(dyu + b * C, dyu + (b + 1) * C, 0.0);
    for (int64_t k = 0; k < blocks; ++k) {
      const double* part = partial.data() + (b * blocks + k) * width;
      for (int64_t c = 0; c < C; ++c) uu[b * C + c] += part[c];
      if (dy)
        for (int64_t c = 0; c < C; ++c) dyu[b * C + c] += part[C + c];
    }
  }
}

// One batch's GRN terms from its sums: g_c = ||u_:c||, D = mean(g) + eps; gain_c = gamma_c g_c / D + 1
// (y = u gain + beta) and, for the backward (dyu given), coef_c = dL/dg_c / g_c, where with
// s_c = gamma_c dyu_c: dL/dg_c = s_c / D - (sum_k s_k g_k) / (C D^2), and coef_c = 0 where
// g_c = 0, as torch. dgamma_part_c = dyu_c g_c / D when asked for.
void grn_terms(float* gain, float* coef, double* dgamma_part, const double* uu, const double* dyu, const float* gamma,
               int64_t C, float eps) {
  std::vector<double> g(C);
  double sum_g = 0.0;
  for (int64_t c = 0; c < C; ++c) sum_g += g[c] = std::sqrt(uu[c]);
  const double D = sum_g / static_cast<double>(C) + eps;
  double sum_sg = 0.0;
  if (dyu)
    for (int64_t c = 0; c < C; ++c) sum_sg += gamma[c] * dyu[c] * g[c];
  for (int64_t c = 0; c < C; ++c) {
    gain[c] = static_cast<float>(gamma[c] * (g[c] / D) + 1.0);
    if (dgamma_part) dgamma_part[c] = dyu[c] * (g[c] / D);
    if (!coef) continue;
    const double dg = gamma[c] * dyu[c] / D - sum_sg / (static_cast<double>(C) * D * D);
    coef[c] = g[c] > 0.0 ? static_cast<float>(dg / g[c]) : 0.0f;
  }
}

// Rows (B * P) in parallel, each with its batch's per-channel terms: fn(row, b).
template <typename F>
void grn_rows(int64_t B, int64_t P, int64_t C, F fn) {
  parallel_range(B * P, std::max<int64_t>(1, kElementwiseChunk / C), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) fn(r, r / P);
  });
}

// The GRN backward's per-batch terms (gain, coef: (B, C)) from u and dy; dgamma += its part.
void grn_backward_terms(std::vector<float>& gain, std::vector<float>& coef, float* dgamma, const float* dy,
                        const float* u, const float* gamma, int64_t B, int64_t P, int64_t C, float eps) {
  std::vector<double> uu(B * C), dyu(B * C);             // (B, C)
  std::vector<double> dgamma_parts(dgamma ? B * C : 0);  // (B, C)
  grn_sums(uu.data(), dyu.data(), u, dy, B, P, C);
  gain.resize(B * C);
  coef.resize(B * C);
  for (int64_t b = 0; b < B; ++b)
    grn_terms(gain.data() + b * C, coef.data() + b * C, dgamma ? dgamma_parts.data() + b * C : nullptr,
              uu.data() + b * C, dyu.data() + b * C, gamma, C, eps);
  if (!dgamma) return;
  for (int64_t c = 0; c < C; ++c) {
    double s = 0.0;
    for (int64_t b = 0; b < B; ++b) s += dgamma_parts[b * C + c];
    dgamma[c] += static_cast<float>(s);
  }
}

// The GRN forward into y of any storage type: a row at a time, rounded once where y is narrower.
void grn_forward_into(TensorOut y, const float* u, const float* gamma, const float* beta, int64_t B, int64_t P,
                      int64_t C, float eps) {
  std::vector<double> uu(B * C);  // (B, C)
  grn_sums(uu.data(), nullptr, u, nullptr, B, P, C);
  std::vector<float> gain(B * C);  // (B, C)
  for (int64_t b = 0; b < B; ++b)
    grn_terms(gain.data() + b * C, nullptr, nullptr, uu.data() + b * C, nullptr, gamma, C, eps);
  grn_rows(B, P, C, [&](int64_t r, int64_t b) {
    thread_local std::vector<float> row;  // (C), where y is narrower
    if (y.type != DType::f32) row.resize(C);
    float* out = y.type == DType::f32 ? y.f32() + r * C : row.data();
    const float* gb = gain.data() + b * C;
    for (int64_t c = 0; c < C; ++c) out[c] = u[r * C + c] * gb[c] + beta[c];
    if (y.type != DType::f32) store_values(y, r * C, out, C);
  });
}

// g (n) = GELU(u), u widened a block at a time (into g itself) where it is stored narrower.
void gelu_of(float* g, TensorRef u, int64_t n) {
  const KernelSet& ks = active_kernels();
  parallel_range(n, kElementwiseChunk, [&](int64_t i0, int64_t i1) {
    if (u.type == DType::bf16) return ks.gelu_forward_bf16(g + i0, u.lowp() + i0, i1 - i0);
    for (int64_t b = i0; b < i1; b += kWidenBlock) {
      const int64_t m = std::min(kWidenBlock, i1 - b);
      ks.gelu_forward(g + b, load_values(u, b, m, g + b), m);
    }
  });
}

}  // namespace

void CpuOps::grn_forward(float* y, const float* u, const float* gamma, const float* beta, int64_t B, int64_t P,
                         int64_t C, float eps) {
  LT_CPU_PROFILE("grn_forward");
  grn_forward_into(y, u, gamma, beta, B, P, C, eps);
}

void CpuOps::grn_backward(float* du, float* dgamma, float* dbeta, const float* dy, const float* u, const float* gamma,
                          int64_t B, int64_t P, int64_t C, float eps) {
  LT_CPU_PROFILE("grn_backward");
  // y_pc = gamma_c u_pc nx_c + beta_c + u_pc with nx_c = g_c / (mean(g) + eps): see grn_terms.
  std::vector<float> gain, coef;  // (B, C) each
  grn_backward_terms(gain, coef, dgamma, dy, u, gamma, B, P, C, eps);
  if (du)
    grn_rows(B, P, C, [&](int64_t r, int64_t b) {
      const float *gb = gain.data() + b * C, *kb = coef.data() + b * C;
      for (int64_t c = 0; c < C; ++c) du[r * C + c] += dy[r * C + c] * gb[c] + kb[c] * u[r * C + c];
    });
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
  float* g = scratch.alloc(B * P * C);  // (B, P, C) GELU(u)
  gelu_of(g, u, B * P * C);
  grn_forward_into(y, g, gamma, beta, B, P, C, eps);
}

void CpuOps::gelu_grn_backward(float* du, const float* dy, TensorRef u, const float* gamma, int64_t B, int64_t P,
                               int64_t C, float eps) {
  LT_CPU_PROFILE("gelu_grn_backward");
  const int64_t n = B * P * C;
  Scratch scratch(*this);
  float* g = scratch.alloc(n);  // (B, P, C) GELU(u), the GRN's input
  gelu_of(g, u, n);
  std::vector<float> gain, coef;  // (B, C) each
  grn_backward_terms(gain, coef, nullptr, dy, g, gamma, B, P, C, eps);
  // Row by row: the GRN's input gradient, then through GELU into du, while the row is in L1
  // (u read as bf16 where it is stored so, else its row widened there).
  const KernelSet& ks = active_kernels();
  grn_rows(B, P, C, [&](int64_t r, int64_t b) {
    thread_local std::vector<float> dg, u_row;  // (C) each
    dg.resize(C);
    u_row.resize(C);
    const float *gb = gain.data() + b * C, *kb = coef.data() + b * C;
    for (int64_t c = 0; c < C; ++c) dg[c] = dy[r * C + c] * gb[c] + kb[c] * g[r * C + c];
    if (u.type == DType::bf16) return ks.gelu_backward_bf16(du + r * C, dg.data(), u.lowp() + r * C, C);
    ks.gelu_backward(du + r * C, dg.data(), load_values(u, r * C, C, u_row.data()), C);
  });
}

void CpuOps::modulate_layernorm_forward(float* y, TensorOut normed, float* mean, float* rstd, const float* x,
                                        const float* ab, int64_t B, int64_t P, int64_t C, float eps) {
  LT_CPU_PROFILE("modulate_layernorm_forward");
  modulate_forward(y, x, ab, B, P, C);
  layernorm_forward(normed, mean, rstd, y, B * P, C, eps);
}

}  // namespace lt::cpu
