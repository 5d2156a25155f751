// LayerNorm, activations, GlobalResponseNorm and the MSE loss on the device.
#include <algorithm>
#include <cmath>

#include "common.cuh"
#include "cuda_ops.h"
#include "profile.h"

namespace lt::cuda {
namespace {

// One block per row: two-pass mean and variance. With ab (B, 2C), the row is first modulated,
// x * (1 + a) + b for its batch item (P rows each), and written to modulated: the
// TimestepBlock fused into the LayerNorm after it.
// (Launched with up to 1024 threads: the bound keeps nvcc within the registers that allows.)
__global__ void __launch_bounds__(1024)
    layernorm_kernel(TensorOut y, float* mean, float* rstd, const float* x, const float* weight, const float* bias,
                     int64_t C, float eps, float* modulated = nullptr, const float* ab = nullptr, int64_t P = 1) {
  const float* xr = x + blockIdx.x * C;
  if (ab) {
    const float* a = ab + (blockIdx.x / P) * 2 * C;
    float* mr = modulated + blockIdx.x * C;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) mr[c] = xr[c] * (1.0f + a[c]) + a[C + c];
    xr = mr;  // each thread reads back only what it wrote
  }
  float s = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += xr[c];
  const float m = block_sum(s) / C;
  float v = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) v += (xr[c] - m) * (xr[c] - m);
  const float r = rsqrtf(block_sum(v) / C + eps);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float n = (xr[c] - m) * r;
    y.set(blockIdx.x * C + c, weight ? n * weight[c] + bias[c] : n);
  }
  if (threadIdx.x == 0 && mean) {
    mean[blockIdx.x] = m;
    rstd[blockIdx.x] = r;
  }
}

__global__ void __launch_bounds__(1024) layernorm_backward_kernel(float* dx, const float* dy, const float* x,
                                                                  const float* mean, const float* rstd, int64_t C) {
  const int64_t row = blockIdx.x;
  const float* xr = x + row * C;
  const float* dyr = dy + row * C;
  const float m = mean[row], r = rstd[row];
  float sd = 0.0f, sdx = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    sd += dyr[c];
    sdx += dyr[c] * (xr[c] - m) * r;
  }
  const float mean_dy = block_sum(sd) / C;
  const float mean_dy_xhat = block_sum(sdx) / C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    dx[row * C + c] += r * (dyr[c] - mean_dy - (xr[c] - m) * r * mean_dy_xhat);
}

__device__ inline float gelu(float v) { return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)); }
__device__ inline float gelu_grad(float v) {
  return 0.5f * (1.0f + erff(v * 0.70710678118654752f)) + v * 0.39894228040143268f * expf(-0.5f * v * v);
}

__device__ inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

enum Act { kGelu, kSilu, kLeaky, kQuickGelu, kSigmoid };

__global__ void act_forward_kernel(float* y, const float* x, int64_t n, int kind, float slope) {
  LT_FOR(i, n) {
    const float v = x[i];
    switch (kind) {
      case kGelu:
        y[i] = gelu(v);
        break;
      case kSilu:
        y[i] = v * sigmoidf(v);
        break;
      case kLeaky:
        y[i] = v > 0.0f ? v : slope * v;
        break;
      case kQuickGelu:
        y[i] = v * sigmoidf(1.702f * v);
        break;
      default:
        y[i] = sigmoidf(v);
        break;
    }
  }
}

__global__ void act_backward_kernel(float* dx, const float* dy, const float* x, int64_t n, int kind, float slope) {
  LT_FOR(i, n) {
    const float v = x[i];
    float g;
    switch (kind) {
      case kGelu:
        g = gelu_grad(v);
        break;
      case kSilu: {
        const float s = sigmoidf(v);
        g = s * (1.0f + v * (1.0f - s));
        break;
      }
      case kLeaky:
        g = v > 0.0f ? 1.0f : slope;
        break;
      default:
        g = NAN;
        break;  // no backward for this activation: make misuse visible
    }
    dx[i] += dy[i] * g;
  }
}

void act_forward(float* y, const float* x, int64_t n, int kind, float slope) {
  act_forward_kernel<<<blocks_for(n), kThreads>>>(y, x, n, kind, slope);
  LT_LAUNCHED("activation");
}
void act_backward(float* dx, const float* dy, const float* x, int64_t n, int kind, float slope) {
  act_backward_kernel<<<blocks_for(n), kThreads>>>(dx, dy, x, n, kind, slope);
  LT_LAUNCHED("activation backward");
}

// The GRN kernels read their input (of any storage type) through GELU when kGelu (gelu_grn_*:
// GELU(u) is never stored), else as it is.
template <bool kGelu>
__device__ inline float grn_input(TensorRef u, int64_t i) {
  return kGelu ? gelu(u.at(i)) : u.at(i);
}

// The GRN reductions over pixels run in two passes so that every thread has work even at
// batch 1: partial sums over chunks of kGrnChunk pixels in float, one thread per (b, chunk, c),
// then each (b, c) joins its chunks in double in a fixed order (no atomics: deterministic).
constexpr int64_t kGrnChunk = 32;

int64_t grn_chunks(int64_t P) { return (P + kGrnChunk - 1) / kGrnChunk; }

// Elementwise and partial-sum kernels run over row_column_grid(images, pixels or chunks of
// pixels, channels).
// sq (B, chunks, C) = sum over the chunk's pixels of in^2; with dy, dot likewise of dy in;
// in = GELU(u) when kGelu.
template <bool kGelu>
__global__ void grn_partials_kernel(float* sq, float* dot, TensorRef u, const float* dy, int64_t P, int64_t C,
                                    int64_t chunks) {
  const int64_t c = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  const int64_t b = blockIdx.z, bk = b * chunks + blockIdx.x, p0 = blockIdx.x * kGrnChunk;
  const int64_t p1 = p0 + kGrnChunk < P ? p0 + kGrnChunk : P;
  float s = 0.0f, d = 0.0f;
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t i = (b * P + p) * C + c;
    const float v = grn_input<kGelu>(u, i);
    s += v * v;
    if (dy) d += dy[i] * v;
  }
  sq[bk * C + c] = s;
  if (dot) dot[bk * C + c] = d;
}

// g (B, C) = sqrt(sum of sq's chunks); dyu (B, C) = sum of dot's chunks when dot is given.
__global__ void grn_join_kernel(float* g, float* dyu, const float* sq, const float* dot, int64_t B, int64_t C,
                                int64_t chunks) {
  LT_FOR(t, B * C) {
    const int64_t b = t / C, c = t % C;
    double s = 0.0, d = 0.0;
    for (int64_t k = 0; k < chunks; ++k) {
      s += sq[(b * chunks + k) * C + c];
      if (dot) d += dot[(b * chunks + k) * C + c];
    }
    g[t] = static_cast<float>(sqrt(s));
    if (dot) dyu[t] = static_cast<float>(d);
  }
}

// g (B, C) = ||in[b, :, c]|| and, with dy, dyu (B, C) = sum_p dy in.
template <bool kGelu>
void grn_sums(float* g, float* dyu, TensorRef u, const float* dy, int64_t B, int64_t P, int64_t C) {
  const int64_t chunks = grn_chunks(P);
  DeviceBuffer sq, dot;
  float* dot_p = dy ? dot.floats(B * chunks * C) : nullptr;
  grn_partials_kernel<kGelu>
      <<<row_column_grid(B, chunks, C), column_threads(C)>>>(sq.floats(B * chunks * C), dot_p, u, dy, P, C, chunks);
  grn_join_kernel<<<blocks_for(B * C), kThreads>>>(g, dyu, static_cast<float*>(sq.data()), dot_p, B, C, chunks);
}

// D (B) = mean_c g + eps, one block per batch item.
__global__ void grn_denominator_kernel(float* D, const float* g, int64_t C, float eps) {
  float s = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += g[blockIdx.x * C + c];
  const float total = block_sum(s);
  if (threadIdx.x == 0) D[blockIdx.x] = total / C + eps;
}

template <bool kGelu>
__global__ void grn_forward_kernel(TensorOut y, TensorRef u, const float* gamma, const float* beta, const float* g,
                                   const float* D, int64_t P, int64_t C) {
  const int64_t c = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  const int64_t b = blockIdx.z, i = (b * P + blockIdx.x) * C + c;
  y.set(i, grn_input<kGelu>(u, i) * (gamma[c] * (g[b * C + c] / D[b]) + 1.0f) + beta[c]);
}

// sum_sg (B) = sum_c gamma_c dyu_c g_c, one block per batch item.
__global__ void grn_sum_sg_kernel(float* sum_sg, const float* gamma, const float* dyu, const float* g, int64_t C) {
  float s = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += gamma[c] * dyu[blockIdx.x * C + c] * g[blockIdx.x * C + c];
  const float total = block_sum(s);
  if (threadIdx.x == 0) sum_sg[blockIdx.x] = total;
}

// du += the input gradient; through GELU's derivative when kGelu.
template <bool kGelu>
__global__ void grn_du_kernel(float* du, const float* dy, TensorRef u, const float* gamma, const float* g,
                              const float* D, const float* dyu, const float* sum_sg, int64_t P, int64_t C) {
  const int64_t c = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  const int64_t b = blockIdx.z, i = (b * P + blockIdx.x) * C + c;
  const float gc = g[b * C + c], Db = D[b];
  const float gain = gamma[c] * (gc / Db) + 1.0f;
  const float dg = gamma[c] * dyu[b * C + c] / Db - sum_sg[b] / (static_cast<float>(C) * Db * Db);
  const float coef = gc > 0.0f ? dg / gc : 0.0f;
  const float d_in = dy[i] * gain + coef * grn_input<kGelu>(u, i);
  du[i] += kGelu ? d_in * gelu_grad(u.at(i)) : d_in;
}

__global__ void grn_param_grads_kernel(float* dgamma, float* dbeta, const float* dy, const float* dyu, const float* g,
                                       const float* D, int64_t B, int64_t P, int64_t C) {
  LT_FOR(c, C) {
    if (dgamma) {
      double s = 0.0;
      for (int64_t b = 0; b < B; ++b) s += (double)dyu[b * C + c] * (g[b * C + c] / D[b]);
      dgamma[c] += static_cast<float>(s);
    }
    if (dbeta) {
      double s = 0.0;
      for (int64_t i = 0; i < B * P; ++i) s += dy[i * C + c];
      dbeta[c] += static_cast<float>(s);
    }
  }
}

int block_for_row(int64_t C) { return C >= 1024 ? 1024 : C >= 256 ? 256 : 128; }

}  // namespace

void CudaOps::layernorm_forward(TensorOut y, float* mean, float* rstd, const float* x, int64_t rows, int64_t C,
                                float eps) {
  LT_PROFILE("layernorm_forward");
  layernorm_kernel<<<static_cast<unsigned>(rows), block_for_row(C)>>>(y, mean, rstd, x, nullptr, nullptr, C, eps);
  LT_LAUNCHED("layernorm");
}

void CudaOps::layernorm_affine_forward(float* y, const float* x, const float* weight, const float* bias, int64_t rows,
                                       int64_t C, float eps) {
  LT_PROFILE("layernorm_affine_forward");
  layernorm_kernel<<<static_cast<unsigned>(rows), block_for_row(C)>>>(y, nullptr, nullptr, x, weight, bias, C, eps);
  LT_LAUNCHED("layernorm affine");
}

void CudaOps::layernorm_backward(float* dx, const float* dy, const float* x, const float* mean, const float* rstd,
                                 int64_t rows, int64_t C) {
  LT_PROFILE("layernorm_backward");
  layernorm_backward_kernel<<<static_cast<unsigned>(rows), block_for_row(C)>>>(dx, dy, x, mean, rstd, C);
  LT_LAUNCHED("layernorm backward");
}

void CudaOps::gelu_forward(float* y, const float* x, int64_t n) {
  LT_PROFILE("gelu_forward");
  act_forward(y, x, n, kGelu, 0.0f);
}
void CudaOps::gelu_backward(float* dx, const float* dy, const float* x, int64_t n) {
  LT_PROFILE("gelu_backward");
  act_backward(dx, dy, x, n, kGelu, 0.0f);
}
void CudaOps::silu_forward(float* y, const float* x, int64_t n) {
  LT_PROFILE("silu_forward");
  act_forward(y, x, n, kSilu, 0.0f);
}
void CudaOps::silu_backward(float* dx, const float* dy, const float* x, int64_t n) {
  LT_PROFILE("silu_backward");
  act_backward(dx, dy, x, n, kSilu, 0.0f);
}
void CudaOps::leaky_relu_forward(float* y, const float* x, float slope, int64_t n) {
  LT_PROFILE("leaky_relu_forward");
  act_forward(y, x, n, kLeaky, slope);
}
void CudaOps::leaky_relu_backward(float* dx, const float* dy, const float* x, float slope, int64_t n) {
  LT_PROFILE("leaky_relu_backward");
  act_backward(dx, dy, x, n, kLeaky, slope);
}
void CudaOps::quick_gelu_forward(float* y, const float* x, int64_t n) {
  LT_PROFILE("quick_gelu_forward");
  act_forward(y, x, n, kQuickGelu, 0.0f);
}
void CudaOps::sigmoid_forward(float* y, const float* x, int64_t n) {
  LT_PROFILE("sigmoid_forward");
  act_forward(y, x, n, kSigmoid, 0.0f);
}

template <bool kGelu>
void grn_forward_device(TensorOut y, TensorRef u, const float* gamma, const float* beta, int64_t B, int64_t P,
                        int64_t C, float eps) {
  DeviceBuffer gb, Db;
  float *g = gb.floats(B * C), *D = Db.floats(B);
  grn_sums<kGelu>(g, nullptr, u, nullptr, B, P, C);
  grn_denominator_kernel<<<static_cast<unsigned>(B), 256>>>(D, g, C, eps);
  grn_forward_kernel<kGelu><<<row_column_grid(B, P, C), column_threads(C)>>>(y, u, gamma, beta, g, D, P, C);
  LT_LAUNCHED("grn");
}

template <bool kGelu>
void grn_backward_device(float* du, float* dgamma, float* dbeta, const float* dy, TensorRef u, const float* gamma,
                         int64_t B, int64_t P, int64_t C, float eps) {
  DeviceBuffer gb, Db, dyub, sgb;
  float *g = gb.floats(B * C), *D = Db.floats(B), *dyu = dyub.floats(B * C), *sum_sg = sgb.floats(B);
  grn_sums<kGelu>(g, dyu, u, dy, B, P, C);
  grn_denominator_kernel<<<static_cast<unsigned>(B), 256>>>(D, g, C, eps);
  if (du) {
    grn_sum_sg_kernel<<<static_cast<unsigned>(B), 256>>>(sum_sg, gamma, dyu, g, C);
    grn_du_kernel<kGelu><<<row_column_grid(B, P, C), column_threads(C)>>>(du, dy, u, gamma, g, D, dyu, sum_sg, P, C);
  }
  if (dgamma || dbeta) grn_param_grads_kernel<<<blocks_for(C), kThreads>>>(dgamma, dbeta, dy, dyu, g, D, B, P, C);
  LT_LAUNCHED("grn backward");
}

void CudaOps::grn_forward(float* y, const float* u, const float* gamma, const float* beta, int64_t B, int64_t P,
                          int64_t C, float eps) {
  LT_PROFILE("grn_forward");
  grn_forward_device<false>(y, u, gamma, beta, B, P, C, eps);
}

void CudaOps::grn_backward(float* du, float* dgamma, float* dbeta, const float* dy, const float* u, const float* gamma,
                           int64_t B, int64_t P, int64_t C, float eps) {
  LT_PROFILE("grn_backward");
  grn_backward_device<false>(du, dgamma, dbeta, dy, u, gamma, B, P, C, eps);
}

void CudaOps::gelu_grn_forward(TensorOut y, TensorRef u, const float* gamma, const float* beta, int64_t B, int64_t P,
                               int64_t C, float eps) {
  LT_PROFILE("gelu_grn_forward");
  grn_forward_device<true>(y, u, gamma, beta, B, P, C, eps);
}

void CudaOps::gelu_grn_backward(float* du, const float* dy, TensorRef u, const float* gamma, int64_t B, int64_t P,
                                int64_t C, float eps) {
  LT_PROFILE("gelu_grn_backward");
  grn_backward_device<true>(du, nullptr, nullptr, dy, u, gamma, B, P, C, eps);
}

void CudaOps::modulate_layernorm_forward(float* y, TensorOut normed, float* mean, float* rstd, const float* x,
                                         const float* ab, int64_t B, int64_t P, int64_t C, float eps) {
  LT_PROFILE("modulate_layernorm_forward");
  layernorm_kernel<<<static_cast<unsigned>(B * P), block_for_row(C)>>>(normed, mean, rstd, x, nullptr, nullptr, C, eps,
                                                                       y, ab, P);
  LT_LAUNCHED("modulate + layernorm");
}

namespace {
__global__ void mse_kernel(double* total, float* dpred, const float* pred, const float* target, int64_t n, float g) {
  double s = 0.0;
  LT_FOR(i, n) {
    const float diff = pred[i] - target[i];
    s += (double)diff * diff;
    if (dpred) dpred[i] += g * diff;
  }
  s = block_sum_double(s);
  if (threadIdx.x == 0) atomicAdd(total, s);
}
}  // namespace

double CudaOps::mse_loss(float* dpred, const float* pred, const float* target, int64_t n, float grad_scale) {
  LT_PROFILE("mse_loss");
  DeviceBuffer sum;
  double* total = static_cast<double*>(sum.reserve(sizeof(double)));
  LT_CUDA(cudaMemsetAsync(total, 0, sizeof(double), 0));
  mse_kernel<<<std::min<unsigned>(blocks_for(n), 1024), kThreads>>>(total, dpred, pred, target, n,
                                                                    2.0f * grad_scale / static_cast<float>(n));
  LT_LAUNCHED("mse_loss");
  double host = 0.0;
  LT_CUDA(cudaMemcpy(&host, total, sizeof(double), cudaMemcpyDeviceToHost));
  return n > 0 ? host / static_cast<double>(n) : 0.0;
}

}  // namespace lt::cuda
