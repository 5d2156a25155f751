// Portable kernels: plain C++ the compiler may vectorise for the baseline ISA. Also the path
// for CPUs without AVX2/FMA and for non-x86 builds.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "../dtype.h"
#include "../rng.h"
#include "kernels.h"

namespace lt::cpu {
namespace {

constexpr int kMR = 4, kNR = 8;

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

inline float widened(float v) { return v; }
inline float widened(uint16_t v) { return bf16_to_f32(v); }

template <typename X>
void gelu_forward_generic(float* y, const X* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = widened(x[i]);
    y[i] = 0.5f * v * (1.0f + std::erf(v * static_cast<float>(M_SQRT1_2)));
  }
}

template <typename X>
void gelu_backward_generic(float* dx, const float* dy, const X* x, int64_t n) {
  const float inv_sqrt_2pi = static_cast<float>(0.5 * M_2_SQRTPI * M_SQRT1_2);
  for (int64_t i = 0; i < n; ++i) {
    const float v = widened(x[i]);
    const float cdf = 0.5f * (1.0f + std::erf(v * static_cast<float>(M_SQRT1_2)));
    dx[i] += dy[i] * (cdf + v * inv_sqrt_2pi * std::exp(-0.5f * v * v));
  }
}

void sigmoid_generic(float* y, const float* x, int64_t n, bool times_x) {
  for (int64_t i = 0; i < n; ++i) {
    const float s = 1.0f / (1.0f + std::exp(-x[i]));
    y[i] = times_x ? x[i] * s : s;
  }
}

void bias_silu_generic(float* c, int64_t ldc, int64_t rows, int64_t cols, const float* bias, bool silu) {
  for (int64_t r = 0; r < rows; ++r, c += ldc) {
    if (bias)
      for (int64_t j = 0; j < cols; ++j) c[j] += bias[j];
    if (silu) sigmoid_generic(c, c, cols, true);
  }
}

// A read from packed panels (A[p * kMR + i]) or from rows of A itself (A[i * lda + p]).
void tile_generic(int64_t kc, const float* A, int64_t row_stride, int64_t step, const float* Bp, const TileOut& out) {
  // As the vector sets: a row count outside 1..kMR does nothing, columns are cut to the tile.
  const int rows = out.rows >= 1 && out.rows <= kMR ? out.rows : 0, cols = std::clamp(out.cols, 0, kNR);
  float acc[kMR][kNR] = {};
  for (int64_t p = 0; p < kc; ++p, A += step, Bp += kNR)
    for (int i = 0; i < rows; ++i)
      for (int j = 0; j < kNR; ++j) acc[i][j] += A[i * row_stride] * Bp[j];
  for (int i = 0; i < rows; ++i) {
    const float* row = out.c + i * out.ldc;
    float v[kNR];
    for (int j = 0; j < cols; ++j)
      v[j] = out.beta == 0.0f ? out.alpha * acc[i][j] : out.alpha * acc[i][j] + out.beta * row[j];
    bias_silu_generic(v, kNR, 1, cols, out.bias, out.silu);
    if (out.c16)
      for (int j = 0; j < cols; ++j) out.c16[i * out.ldc + j] = f32_to_bf16(v[j]);
    else
      std::copy_n(v, cols, out.c + i * out.ldc);
  }
}

void gemm_tile_generic(int64_t kc, const float* Ap, const float* Bp, const TileOut& out) {
  tile_generic(kc, Ap, 1, kMR, Bp, out);
}

void gemm_tile_rows_generic(int64_t kc, const float* A, int64_t lda, const float* Bp, const TileOut& out) {
  tile_generic(kc, A, lda, 1, Bp, out);
}

void depthwise_pixel_generic(float* out, const float* const* in, const float* taps, const float* bias, int64_t C,
                             int kk, bool silu) {
  for (int64_t c = 0; c < C; ++c) {
    float acc = bias ? bias[c] : 0.0f;
    for (int t = 0; t < kk; ++t)
      if (in[t]) acc += taps[t * C + c] * in[t][c];
    out[c] = acc;
  }
  if (silu) sigmoid_generic(out, out, C, true);
}

void to_bf16_generic(uint16_t* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
}

void through_bf16_generic(float* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(f32_to_bf16(src[i]));
}

void from_bf16_generic(float* dst, const uint16_t* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
}

void dropout_generic(float* y, const float* x, float p, float scale, uint32_t key_a, uint32_t key_b, int64_t first,
                     int64_t n, bool accumulate) {
  const DropoutKey key{key_a, key_b};
  for (int64_t i = 0; i < n; ++i) {
    const float v = uniform01(key, static_cast<uint32_t>(first + i)) >= p ? x[i] * scale : 0.0f;
    y[i] = accumulate ? y[i] + v : v;
  }
}

}  // namespace

template <typename T>
inline float value_of(T v) {
  if constexpr (std::is_same_v<T, uint16_t>)
    return bf16_to_f32(v);
  else
    return v;
}

template <typename T, bool kRound>
void pack_gather_generic(float* dst, const T* src, int64_t ld, int64_t kc, int count, int width) {
  // p outermost: dst is written in order, and the count rows are read as parallel streams.
  for (int64_t p = 0; p < kc; ++p, dst += width) {
    for (int i = 0; i < count; ++i) {
      const float v = value_of(src[i * ld + p]);
      dst[i] = kRound ? bf16_to_f32(f32_to_bf16(v)) : v;
    }
    for (int i = count; i < width; ++i) dst[i] = 0.0f;
  }
}

template <typename T>
void pack_copy_generic(float* dst, const T* src, int64_t ld, int64_t kc, int count, int width) {
  for (int64_t p = 0; p < kc; ++p, dst += width, src += ld) {
    for (int i = 0; i < count; ++i) dst[i] = value_of(src[i]);
    for (int i = count; i < width; ++i) dst[i] = 0.0f;
  }
}

template void pack_gather_generic<float>(float*, const float*, int64_t, int64_t, int, int);
template void pack_gather_generic<float, true>(float*, const float*, int64_t, int64_t, int, int);
template void pack_gather_generic<uint16_t>(float*, const uint16_t*, int64_t, int64_t, int, int);
template void pack_copy_generic<float>(float*, const float*, int64_t, int64_t, int, int);
template void pack_copy_generic<uint16_t>(float*, const uint16_t*, int64_t, int64_t, int, int);

const KernelSet kGenericKernels = {"generic",
                                   kMR,
                                   kNR,
                                   128,
                                   256,
                                   4096,
                                   gemm_tile_generic,
                                   gemm_tile_rows_generic,
                                   pack_gather_generic<float>,
                                   pack_copy_generic<float>,
                                   pack_gather_generic<uint16_t>,
                                   pack_gather_generic<float, true>,
                                   pack_copy_generic<uint16_t>,
                                   row_max_generic,
                                   exp_shift_sum_generic,
                                   gelu_forward_generic<float>,
                                   gelu_backward_generic<float>,
                                   sigmoid_generic,
                                   bias_silu_generic,
                                   dropout_generic,
                                   depthwise_pixel_generic,
                                   to_bf16_generic,
                                   through_bf16_generic,
                                   from_bf16_generic,
                                   gelu_forward_generic<uint16_t>,
                                   gelu_backward_generic<uint16_t>};

}  // namespace lt::cpu
