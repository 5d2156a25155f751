// Convolutions on the device: depthwise k x k (channels last), general k x k (direct), 1x1 (NCHW, GEMM).
#include <algorithm>

#include "common.cuh"
#include "cuda_ops.h"
#include "profile.h"

namespace lt::cuda {
namespace {

// y (B, Ho, Wo, C) for a depthwise k x k convolution, padding k / 2.
__device__ inline float silu_if(float v, bool silu) { return silu ? v / (1.0f + expf(-v)) : v; }

// Depthwise kernels run over row_column_grid(images, output pixels, channels): each thread finds
// its pixel's row and column with one 32-bit division.
__global__ void depthwise_forward_kernel(float* y, const float* x, const float* w, const float* bias, int64_t H,
                                         int64_t W, int64_t C, int64_t k, int64_t stride, bool replicate, bool silu) {
  const int64_t c = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  const int64_t Ho = (H + stride - 1) / stride, Wo = (W + stride - 1) / stride, pad = k / 2, b = blockIdx.z;
  const unsigned oy = blockIdx.x / static_cast<unsigned>(Wo), ox = blockIdx.x - oy * static_cast<unsigned>(Wo);
  float acc = bias ? bias[c] : 0.0f;
  for (int64_t ky = 0; ky < k; ++ky) {
    int64_t iy = oy * stride + ky - pad;
    if (replicate) iy = iy < 0 ? 0 : iy >= H ? H - 1 : iy;
    if (iy < 0 || iy >= H) continue;
    for (int64_t kx = 0; kx < k; ++kx) {
      int64_t ix = ox * stride + kx - pad;
      if (replicate) ix = ix < 0 ? 0 : ix >= W ? W - 1 : ix;
      if (ix < 0 || ix >= W) continue;
      acc += w[c * k * k + ky * k + kx] * x[((b * H + iy) * W + ix) * C + c];
    }
  }
  y[((b * Ho + oy) * Wo + ox) * C + c] = silu_if(acc, silu);
}

// dx for the 3x3 stride-1 case: gathers from the output neighbourhood.
__global__ void depthwise3_backward_input_kernel(float* dx, const float* dy, const float* w, int64_t H, int64_t W,
                                                 int64_t C) {
  const int64_t c = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  const int64_t b = blockIdx.z;
  const unsigned xh = blockIdx.x / static_cast<unsigned>(W), xw = blockIdx.x - xh * static_cast<unsigned>(W);
  float acc = 0.0f;
  for (int ky = 0; ky < 3; ++ky) {
    const int64_t oy = static_cast<int64_t>(xh) - ky + 1;
    if (oy < 0 || oy >= H) continue;
    for (int kx = 0; kx < 3; ++kx) {
      const int64_t ox = static_cast<int64_t>(xw) - kx + 1;
      if (ox < 0 || ox >= W) continue;
      acc += w[c * 9 + ky * 3 + kx] * dy[((b * H + oy) * W + ox) * C + c];
    }
  }
  dx[((b * H + xh) * W + xw) * C + c] += acc;
}

// dw (C, 9) and dbias (C): one thread per (channel, tap), summing over every position.
__global__ void depthwise3_backward_params_kernel(float* dw, float* dbias, const float* dy, const float* x, int64_t B,
                                                  int64_t H, int64_t W, int64_t C) {
  LT_FOR(t, C * 10) {
    const int64_t c = t / 10, tap = t % 10;
    double acc = 0.0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t wi = 0; wi < W; ++wi) {
          const float g = dy[((b * H + h) * W + wi) * C + c];
          if (tap == 9) {
            acc += g;
            continue;
          }
          const int64_t iy = h + tap / 3 - 1, ix = wi + tap % 3 - 1;
          if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
          acc += (double)g * x[((b * H + iy) * W + ix) * C + c];
        }
    if (tap < 9 && dw) dw[c * 9 + tap] += static_cast<float>(acc);
    if (tap == 9 && dbias) dbias[c] += static_cast<float>(acc);
  }
}

// y (B, Ho, Wo, Cout) = conv(x (B, H, W, Cin), w (Cout, k, k, Cin)) + bias, one thread per output.
__global__ void conv2d_kernel(float* y, const float* x, const float* w, const float* bias, const float* residual,
                              int64_t B, int64_t H, int64_t W, int64_t Cin, int64_t Cout, int64_t k, int64_t stride,
                              bool silu) {
  const int64_t Ho = (H + stride - 1) / stride, Wo = (W + stride - 1) / stride, pad = k / 2;
  LT_FOR(i, B * Ho * Wo * Cout) {
    const int64_t o = i % Cout, ox = (i / Cout) % Wo, oy = (i / (Cout * Wo)) % Ho, b = i / (Cout * Wo * Ho);
    float acc = bias ? bias[o] : 0.0f;
    for (int64_t ky = 0; ky < k; ++ky) {
      const int64_t iy = oy * stride + ky - pad;
      if (iy < 0 || iy >= H) continue;
      for (int64_t kx = 0; kx < k; ++kx) {
        const int64_t ix = ox * stride + kx - pad;
        if (ix < 0 || ix >= W) continue;
        const float* in = x + ((b * H + iy) * W + ix) * Cin;
        const float* wt = w + ((o * k + ky) * k + kx) * Cin;
        for (int64_t c = 0; c < Cin; ++c) acc += wt[c] * in[c];
      }
    }
    y[i] = silu_if(acc, silu) + (residual ? residual[i] : 0.0f);
  }
}

// A transposed convolution as a GEMM and a gather: cols (pixels, k, k, Cout) = x (pixels, Cin)
// w' (Cin, k, k, Cout) over a band of input rows, then each output pixel sums the taps that land
// on it.

// w' (Cin, k, k, Cout) from w (Cin, Cout, k, k), so the gather reads cols along Cout.
__global__ void taps_last_kernel(float* wp, const float* w, int64_t Cin, int64_t Cout, int64_t kk) {
  LT_FOR(i, Cin * Cout * kk) {
    const int64_t o = i % Cout, tap = (i / Cout) % kk, c = i / (Cout * kk);
    wp[i] = w[(c * Cout + o) * kk + tap];
  }
}

__global__ void fill_bias_kernel(float* y, const float* bias, int64_t n, int64_t C) {
  LT_FOR(i, n) y[i] = bias ? bias[i % C] : 0.0f;
}

// y rows oy0 .. oy0 + n_oy (Wo, Cout) of one image += the taps in cols (rows, W, k, k, Cout) of
// input rows r0 .. r0 + rows that land on them.
__global__ void transpose_gather_kernel(float* y, const float* cols, int64_t r0, int64_t rows, int64_t oy0,
                                        int64_t n_oy, int64_t W, int64_t Wo, int64_t Cout, int64_t k, int64_t stride,
                                        int64_t pad) {
  const int64_t taps = k * k * Cout;
  LT_FOR(i, n_oy * Wo * Cout) {
    const int64_t o = i % Cout, ox = (i / Cout) % Wo, oy = oy0 + i / (Cout * Wo);
    float acc = 0.0f;
    for (int64_t ky = 0; ky < k; ++ky) {
      const int64_t t = oy + pad - ky;
      if (t < 0 || t % stride || t / stride < r0 || t / stride >= r0 + rows) continue;
      for (int64_t kx = 0; kx < k; ++kx) {
        const int64_t u = ox + pad - kx;
        if (u < 0 || u % stride || u / stride >= W) continue;
        acc += cols[((t / stride - r0) * W + u / stride) * taps + (ky * k + kx) * Cout + o];
      }
    }
    y[(oy * Wo + ox) * Cout + o] += acc;
  }
}

__global__ void pixel_unshuffle_kernel(float* y, const float* x, int64_t B, int64_t H, int64_t W, int64_t C,
                                       int64_t r) {
  const int64_t Ho = H / r, Wo = W / r, Cr = C * r * r;
  LT_FOR(i, B * Ho * Wo * Cr) {
    const int64_t ch = i % Cr, ox = (i / Cr) % Wo, oy = (i / (Cr * Wo)) % Ho, b = i / (Cr * Wo * Ho);
    const int64_t c = ch / (r * r), dy = (ch / r) % r, dx = ch % r;
    y[i] = x[((b * H + oy * r + dy) * W + ox * r + dx) * C + c];
  }
}

__global__ void fill_channels_kernel(float* y, const float* bias, int64_t B, int64_t C, int64_t P) {
  LT_FOR(i, B * C * P) y[i] = bias ? bias[(i / P) % C] : 0.0f;
}

__global__ void channel_sums_kernel(float* db, const float* dy, int64_t B, int64_t C, int64_t P) {
  LT_FOR(c, C) {
    double s = 0.0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t p = 0; p < P; ++p) s += dy[(b * C + c) * P + p];
    db[c] += static_cast<float>(s);
  }
}

}  // namespace

void CudaOps::depthwise_conv3x3_forward(float* y, const float* x, const float* w, const float* bias, int64_t B,
                                        int64_t H, int64_t W, int64_t C) {
  LT_PROFILE("depthwise_conv3x3_forward");
  depthwise_forward_kernel<<<row_column_grid(B, H * W, C), column_threads(C)>>>(y, x, w, bias, H, W, C, 3, 1, false,
                                                                                false);
  LT_LAUNCHED("depthwise 3x3");
}

void CudaOps::depthwise_conv3x3_backward(float* dx, float* dw, float* dbias, const float* dy, const float* x,
                                         const float* w, int64_t B, int64_t H, int64_t W, int64_t C) {
  LT_PROFILE("depthwise_conv3x3_backward");
  if (dx) depthwise3_backward_input_kernel<<<row_column_grid(B, H * W, C), column_threads(C)>>>(dx, dy, w, H, W, C);
  if (dw || dbias) depthwise3_backward_params_kernel<<<blocks_for(C * 10), kThreads>>>(dw, dbias, dy, x, B, H, W, C);
  LT_LAUNCHED("depthwise 3x3 backward");
}

void CudaOps::depthwise_conv_forward(float* y, const float* x, const float* w, const float* bias, int64_t B, int64_t H,
                                     int64_t W, int64_t C, int64_t k, int64_t stride, bool replicate, bool silu) {
  LT_PROFILE("depthwise_conv_forward");
  const int64_t pixels = ((H + stride - 1) / stride) * ((W + stride - 1) / stride);
  depthwise_forward_kernel<<<row_column_grid(B, pixels, C), column_threads(C)>>>(y, x, w, bias, H, W, C, k, stride,
                                                                                 replicate, silu);
  LT_LAUNCHED("depthwise");
}

void CudaOps::pixel_unshuffle(float* y, const float* x, int64_t B, int64_t H, int64_t W, int64_t C, int64_t r) {
  LT_PROFILE("pixel_unshuffle");
  pixel_unshuffle_kernel<<<blocks_for(B * H * W * C), kThreads>>>(y, x, B, H, W, C, r);
  LT_LAUNCHED("pixel_unshuffle");
}

void CudaOps::conv_transpose2d_forward(float* y, const float* x, const float* w, const float* bias, int64_t B,
                                       int64_t H, int64_t W, int64_t Cin, int64_t Cout, int64_t k, int64_t stride,
                                       int64_t pad) {
  LT_PROFILE("conv_transpose2d_forward");
  const int64_t Ho = (H - 1) * stride - 2 * pad + k, Wo = (W - 1) * stride - 2 * pad + k, taps = k * k * Cout;
  fill_bias_kernel<<<blocks_for(B * Ho * Wo * Cout), kThreads>>>(y, bias, B * Ho * Wo * Cout, Cout);
  DeviceBuffer wp_buf, cols_buf;
  float* wp = wp_buf.floats(Cin * taps);  // (Cin, k, k, Cout)
  taps_last_kernel<<<blocks_for(Cin * taps), kThreads>>>(wp, w, Cin, Cout, k * k);
  LT_LAUNCHED("conv_transpose2d weight");
  // Bands of input rows keep cols (band, W, k, k, Cout) within 256 MiB.
  const int64_t band = std::clamp<int64_t>((int64_t{64} << 20) / std::max<int64_t>(1, W * taps), 1, H);
  float* cols = cols_buf.floats(band * W * taps);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t r0 = 0; r0 < H; r0 += band) {
      const int64_t rows = std::min(band, H - r0);
      gemm_device(cols, x + (b * H + r0) * W * Cin, wp, rows * W, taps, Cin, false, false, 1.0f, 0.0f, Cin, taps, taps,
                  allow_tf32_);
      const int64_t oy0 = std::max<int64_t>(0, r0 * stride - pad),
                    oy1 = std::min<int64_t>(Ho, (r0 + rows - 1) * stride - pad + k);
      transpose_gather_kernel<<<blocks_for((oy1 - oy0) * Wo * Cout), kThreads>>>(
          y + b * Ho * Wo * Cout, cols, r0, rows, oy0, oy1 - oy0, W, Wo, Cout, k, stride, pad);
      LT_LAUNCHED("conv_transpose2d gather");
    }
}

void CudaOps::conv2d_forward(float* y, const float* x, const float* w, const float* bias, const float* residual,
                             int64_t B, int64_t H, int64_t W, int64_t Cin, int64_t Cout, int64_t k, int64_t stride,
                             bool silu) {
  LT_PROFILE("conv2d_forward");
  check_conv2d_residual(residual, silu);
  const int64_t n = B * ((H + stride - 1) / stride) * ((W + stride - 1) / stride) * Cout;
  conv2d_kernel<<<blocks_for(n), kThreads>>>(y, x, w, bias, residual, B, H, W, Cin, Cout, k, stride, silu);
  LT_LAUNCHED("conv2d");
}

void CudaOps::conv1x1_forward(float* y, const float* x, const float* w, const float* bias, int64_t B, int64_t Cin,
                              int64_t Cout, int64_t P) {
  LT_PROFILE("conv1x1_forward");
  fill_channels_kernel<<<blocks_for(B * Cout * P), kThreads>>>(y, bias, B, Cout, P);
  LT_LAUNCHED("conv1x1 bias");
  for (int64_t b = 0; b < B; ++b)
    gemm(y + b * Cout * P, w, x + b * Cin * P, Cout, P, Cin, false, false, 1.0f, 1.0f, Cin, P, P);
}

void CudaOps::conv1x1_backward(float* dx, float* dw, float* dbias, const float* dy, const float* x, const float* w,
                               int64_t B, int64_t Cin, int64_t Cout, int64_t P) {
  LT_PROFILE("conv1x1_backward");
  for (int64_t b = 0; b < B; ++b) {
    if (dx) gemm(dx + b * Cin * P, w, dy + b * Cout * P, Cin, P, Cout, true, false, 1.0f, 1.0f, Cin, P, P);
    if (dw) gemm(dw, dy + b * Cout * P, x + b * Cin * P, Cout, Cin, P, false, true, 1.0f, 1.0f, P, P, Cin);
  }
  if (dbias) {
    channel_sums_kernel<<<blocks_for(Cout), kThreads>>>(dbias, dy, B, Cout, P);
    LT_LAUNCHED("conv1x1 bias grad");
  }
}

}  // namespace lt::cuda
