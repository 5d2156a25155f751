// AVX2 + FMA kernels (compiled with -mavx2 -mfma; only called after cpuid says so).
#include <immintrin.h>

#include <algorithm>

#include "../dtype.h"
#include "kernels.h"
#include "tile_entries.h"
#include "vector_exp.h"

namespace lt::cpu {
namespace {

constexpr int kMR = 6, kNR = 16;  // 12 ymm accumulators + 2 B vectors + 1 broadcast

// r[0..7] = the transpose of the 8x8 block r[0..7].
inline void transpose8(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
  }
  for (int c = 0; c < 4; ++c) {
    r[c] = _mm256_permute2f128_ps(u[c], u[c + 4], 0x20);
    r[c + 4] = _mm256_permute2f128_ps(u[c], u[c + 4], 0x31);
  }
}

// Lanes below n set, as maskload/maskstore read them.
inline __m256i lanes_below(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Eight values at p as fp32 lanes: fp32 as stored, bf16 widened (the top half of an fp32).
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// Masked stores are microcoded and slow on AMD cores, so a panel row narrower than a vector
// (A's panels of 6) is written with a whole vector whose spare lanes land on the next row,
// rewritten right after; rows whose spare lanes must not be touched (a panel's last row) are masked.
inline void store_row(float* dst, __m256 v, int lanes, bool keep_spare) {
  if (lanes == 8 || !keep_spare) return _mm256_storeu_ps(dst, v);
  _mm256_maskstore_ps(dst, lanes_below(lanes), v);
}

// f32_to_bf16 on eight lanes, each result in the low half of its 32-bit lane.
inline __m256i bf16_bits(__m256 x) {
  const __m256i u = _mm256_castps_si256(x);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb)), 16);
  const __m256i magnitude = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
  const __m256i nan = _mm256_cmpgt_epi32(magnitude, _mm256_set1_epi32(0x7f800000));
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  return _mm256_blendv_epi8(rounded, quiet, nan);
}

// x rounded to bf16 and widened back, as through_bf16 does it.
inline __m256 through_bf16_8(__m256 x) { return _mm256_castsi256_ps(_mm256_slli_epi32(bf16_bits(x), 16)); }

void to_bf16_avx2(uint16_t* dst, const float* src, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    // packus works per 128-bit half: (a0 b0 a1 b1) in 64-bit quarters, put back in order.
    const __m256i packed =
        _mm256_packus_epi32(bf16_bits(_mm256_loadu_ps(src + i)), bf16_bits(_mm256_loadu_ps(src + i + 8)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_permute4x64_epi64(packed, 0xd8));
  }
  for (; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
}

void through_bf16_avx2(float* dst, const float* src, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, through_bf16_8(_mm256_loadu_ps(src + i)));
  for (; i < n; ++i) dst[i] = bf16_to_f32(f32_to_bf16(src[i]));
}

void from_bf16_avx2(float* dst, const uint16_t* src, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load8(src + i));
  for (; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
}

// Eight p at a time, transposed in registers (the generic loop finishes a ragged end of p).
// kRound: fp32 values rounded through bf16 as they are loaded.
template <typename T, bool kRound = false>
void pack_gather_avx2(float* dst, const T* src, int64_t ld, int64_t kc, int count, int width) {
  const int64_t full = kc / 8 * 8;
  for (int64_t p0 = 0; p0 < full; p0 += 8)
    for (int i0 = 0; i0 < width; i0 += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) {
        r[i] = i0 + i < count ? load8(src + (i0 + i) * ld + p0) : _mm256_setzero_ps();
        if constexpr (kRound) r[i] = through_bf16_8(r[i]);
      }
      transpose8(r);
      const int lanes = width - i0 < 8 ? width - i0 : 8;
      // Rows p are written in order, each one's spare lanes overwritten by the next; a panel
      // wider than a vector has its next row's first lanes written already, so it stays masked.
      for (int p = 0; p < 8; ++p) store_row(dst + (p0 + p) * width + i0, r[p], lanes, width > 8 || p0 + p == kc - 1);
    }
  if (full < kc) pack_gather_generic<T, kRound>(dst + full * width, src + full, ld, kc - full, count, width);
}

void pack_copy_avx2(float* dst, const float* src, int64_t ld, int64_t kc, int count, int width) {
  if (width > 16) return pack_copy_generic(dst, src, ld, kc, count, width);
  if (count == 16 && width == 16) {
    for (int64_t p = 0; p < kc; ++p, dst += 16, src += ld) {
      _mm256_storeu_ps(dst, _mm256_loadu_ps(src));
      _mm256_storeu_ps(dst + 8, _mm256_loadu_ps(src + 8));
    }
    return;
  }
  const __m256i lo = lanes_below(count), hi = lanes_below(count - 8);
  const int lo_lanes = width < 8 ? width : 8, hi_lanes = width - 8;
  for (int64_t p = 0; p < kc; ++p, dst += width, src += ld) {
    const bool last = p == kc - 1;
    store_row(dst, _mm256_maskload_ps(src, lo), lo_lanes, last && width <= 8);
    if (width > 8) store_row(dst + 8, _mm256_maskload_ps(src + 8, hi), hi_lanes, last);
  }
}

// bf16 rows have no masked 16-bit load here: whole panels of 16 go by vector, others by the
// generic loop.
void pack_copy_bf16_avx2(float* dst, const uint16_t* src, int64_t ld, int64_t kc, int count, int width) {
  if (count != 16 || width != 16) return pack_copy_generic(dst, src, ld, kc, count, width);
  for (int64_t p = 0; p < kc; ++p, dst += width, src += ld) {
    _mm256_storeu_ps(dst, load8(src));
    _mm256_storeu_ps(dst + 8, load8(src + 8));
  }
}

float row_max_avx2(const float* x, int64_t n) {
  __m256 m = _mm256_set1_ps(-__builtin_inff());
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m);
  float r = lanes[0];
  for (int j = 1; j < 8; ++j) r = r > lanes[j] ? r : lanes[j];
  for (; i < n; ++i) r = r > x[i] ? r : x[i];
  return r;
}

// exp(t) for t in [kExpLow, kExpHigh], NaN passed through: exp_ps_avx2's range reduction and
// polynomial without its guards, 2^n added into the exponent field directly (these bounds keep
// it a normal number). About 1.5x faster than exp_ps_avx2 for callers that can clamp.
constexpr float kExpLow = -86.0f, kExpHigh = 88.0f;
inline __m256 exp_in_range_avx2(__m256 t) {
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(t, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), t);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23)));
}

// t clamped into exp_in_range_avx2's range. max/min return their second operand when one is
// NaN: NaN is kept by putting it second.
inline __m256 clamp_exp_argument(__m256 t) {
  return _mm256_min_ps(_mm256_set1_ps(kExpHigh), _mm256_max_ps(_mm256_set1_ps(kExpLow), t));
}

// Softmax's exp: arguments below kExpLow (-inf included) give 0.
inline __m256 softmax_exp_avx2(__m256 t) {
  const __m256 below = _mm256_cmp_ps(t, _mm256_set1_ps(kExpLow), _CMP_LT_OQ);
  return _mm256_andnot_ps(below, exp_in_range_avx2(clamp_exp_argument(t)));
}

float exp_shift_sum_avx2(float* x, int64_t n, float shift) {
  const __m256 vshift = _mm256_set1_ps(shift);
  __m256 sum = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 e = softmax_exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), vshift));
    _mm256_storeu_ps(x + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  if (i < n) {  // pad the tail with -inf, whose exp adds nothing
    alignas(32) float tail[8];
    for (int j = 0; j < 8; ++j) tail[j] = i + j < n ? x[i + j] : -__builtin_inff();
    __m256 e = softmax_exp_avx2(_mm256_sub_ps(_mm256_load_ps(tail), vshift));
    _mm256_store_ps(tail, e);
    for (int64_t j = i; j < n; ++j) x[j] = tail[j - i];
    sum = _mm256_add_ps(sum, e);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, sum);
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

inline void normal_cdf_pdf(__m256 x, __m256* cdf, __m256* pdf) {
  const __m256 z = _mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f));
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  const __m256 z_abs = _mm256_andnot_ps(sign_bit, z);
  const __m256 e = exp_ps_avx2(_mm256_mul_ps(_mm256_xor_ps(z, sign_bit), z));  // exp(-x^2/2)
  __m256 erf = erf_abs_ps_avx2(z_abs, e);
  erf = _mm256_or_ps(erf, _mm256_and_ps(x, sign_bit));  // erf is odd
  *cdf = _mm256_mul_ps(_mm256_set1_ps(0.5f), _mm256_add_ps(_mm256_set1_ps(1.0f), erf));
  *pdf = _mm256_mul_ps(_mm256_set1_ps(0.39894228040143268f), e);
}

// Full vectors through f8; the tail through a padded copy.
template <typename F>
inline void for_lanes(int64_t n, F f8) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) f8(i, 8);
  if (i < n) f8(i, n - i);
}

inline __m256 load_n(const float* p, int64_t count) {
  if (count == 8) return _mm256_loadu_ps(p);
  alignas(32) float tmp[8] = {};
  for (int64_t j = 0; j < count; ++j) tmp[j] = p[j];
  return _mm256_load_ps(tmp);
}
inline void store_n(float* p, __m256 v, int64_t count) {
  if (count == 8) return _mm256_storeu_ps(p, v);
  alignas(32) float tmp[8];
  _mm256_store_ps(tmp, v);
  for (int64_t j = 0; j < count; ++j) p[j] = tmp[j];
}
inline __m256 load_n(const uint16_t* p, int64_t count) {
  if (count == 8) return load8(p);
  alignas(16) uint16_t tmp[8] = {};
  for (int64_t j = 0; j < count; ++j) tmp[j] = p[j];
  return load8(tmp);
}

template <typename X>
void gelu_forward_avx2(float* y, const X* x, int64_t n) {
  for_lanes(n, [&](int64_t i, int64_t count) {
    __m256 v = load_n(x + i, count), cdf, pdf;
    normal_cdf_pdf(v, &cdf, &pdf);
    store_n(y + i, _mm256_mul_ps(v, cdf), count);
  });
}

template <typename X>
void gelu_backward_avx2(float* dx, const float* dy, const X* x, int64_t n) {
  for_lanes(n, [&](int64_t i, int64_t count) {
    __m256 v = load_n(x + i, count), cdf, pdf;
    normal_cdf_pdf(v, &cdf, &pdf);
    __m256 g = _mm256_mul_ps(load_n(dy + i, count), _mm256_fmadd_ps(v, pdf, cdf));
    store_n(dx + i, _mm256_add_ps(load_n(dx + i, count), g), count);
  });
}

// 1 / (1 + exp(-x)): exp(-x) with -x clamped, where sigmoid is already 1 or 0 to float
// precision (the reciprocal estimate of 1 + exp(88) is 0); the division a reciprocal estimate
// and one Newton step (as sigmoid_avx512). Within 2e-7 of the exact value.
inline __m256 sigmoid_ps_avx2(__m256 x) {
  const __m256 e = exp_in_range_avx2(clamp_exp_argument(_mm256_sub_ps(_mm256_setzero_ps(), x)));
  const __m256 one = _mm256_set1_ps(1.0f), d = _mm256_add_ps(one, e);
  const __m256 rc = _mm256_rcp_ps(d);
  return _mm256_fmadd_ps(rc, _mm256_fnmadd_ps(d, rc, one), rc);
}

void sigmoid_avx2(float* y, const float* x, int64_t n, bool times_x) {
  for_lanes(n, [&](int64_t i, int64_t count) {
    __m256 v = load_n(x + i, count);
    __m256 s = sigmoid_ps_avx2(v);
    store_n(y + i, times_x ? _mm256_mul_ps(v, s) : s, count);
  });
}

void bias_silu_avx2(float* c, int64_t ldc, int64_t rows, int64_t cols, const float* bias, bool silu) {
  for (int64_t r = 0; r < rows; ++r, c += ldc)
    for_lanes(cols, [&](int64_t j, int64_t count) {
      __m256 v = load_n(c + j, count);
      if (bias) v = _mm256_add_ps(v, load_n(bias + j, count));
      if (silu) v = _mm256_mul_ps(v, sigmoid_ps_avx2(v));
      store_n(c + j, v, count);
    });
}

// One register of a tile's row leaving for C (or, row16 set, for c16) through the epilogue, as
// TileOut describes it; lanes < 8 (a partial tile's last columns) go through a buffer, as
// masked moves are slow on AMD cores.
inline void finish_lanes(float* row, uint16_t* row16, int lanes, __m256 sums, __m256 va, __m256 vb, const TileOut& out,
                         __m256 bias) {
  __m256 v =
      out.beta == 0.0f ? _mm256_mul_ps(va, sums) : _mm256_fmadd_ps(va, sums, _mm256_mul_ps(vb, load_n(row, lanes)));
  if (out.bias) v = _mm256_add_ps(v, bias);
  if (out.silu) v = _mm256_mul_ps(v, sigmoid_ps_avx2(v));
  if (!row16) return store_n(row, v, lanes);
  const __m256i bits = bf16_bits(v);
  const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(bits), _mm256_extracti128_si256(bits, 1));
  if (lanes == 8) return _mm_storeu_si128(reinterpret_cast<__m128i*>(row16), packed);
  alignas(16) uint16_t tmp[8];
  _mm_store_si128(reinterpret_cast<__m128i*>(tmp), packed);
  std::copy_n(tmp, lanes, row16);
}

// The tile's first kRowsN rows and kCols columns (8 or 16), with A read from packed panels
// (A[p * mr + i]) or, kRows, from rows of A itself (A[i * lda + p]), which skips packing A for
// GEMMs of few columns. Inlined into each entry point so that the strides, the row count and
// the width are constants there; out is a copy, which stores to C cannot alias, so its fields
// stay in registers.
template <bool kRows, int kRowsN, int kCols>
__attribute__((always_inline)) inline void tile_avx2(int64_t kc, const float* A, int64_t lda, const float* Bp,
                                                     TileOut out) {
  __m256 c[kRowsN][2];
#pragma GCC unroll 6
  for (int i = 0; i < kRowsN; ++i) {
    c[i][0] = c[i][1] = _mm256_setzero_ps();
    _mm_prefetch(reinterpret_cast<const char*>(out.c + i * out.ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(out.c + i * out.ldc + kNR - 1), _MM_HINT_T0);
  }
  const int64_t row_stride = kRows ? lda : 1, step = kRows ? 1 : kMR;
  for (int64_t p = 0; p < kc; ++p, A += step, Bp += kNR) {
    const __m256 b0 = _mm256_load_ps(Bp), b1 = kCols > 8 ? _mm256_load_ps(Bp + 8) : _mm256_setzero_ps();
#pragma GCC unroll 6
    for (int i = 0; i < kRowsN; ++i) {
      __m256 a = _mm256_broadcast_ss(A + i * row_stride);
      c[i][0] = _mm256_fmadd_ps(a, b0, c[i][0]);
      if constexpr (kCols > 8) c[i][1] = _mm256_fmadd_ps(a, b1, c[i][1]);
    }
  }
  const __m256 va = _mm256_set1_ps(out.alpha), vb = _mm256_set1_ps(out.beta);
  // The common case, with no branch per row.
  if (kCols == kNR && out.cols == kNR && !out.bias && !out.silu && !out.c16) {
#pragma GCC unroll 6
    for (int i = 0; i < kRowsN; ++i) {
      float* row = out.c + i * out.ldc;
      if (out.beta == 0.0f) {
        _mm256_storeu_ps(row, _mm256_mul_ps(va, c[i][0]));
        _mm256_storeu_ps(row + 8, _mm256_mul_ps(va, c[i][1]));
      } else {
        _mm256_storeu_ps(row, _mm256_fmadd_ps(va, c[i][0], _mm256_mul_ps(vb, _mm256_loadu_ps(row))));
        _mm256_storeu_ps(row + 8, _mm256_fmadd_ps(va, c[i][1], _mm256_mul_ps(vb, _mm256_loadu_ps(row + 8))));
      }
    }
    return;
  }
  const int lanes0 = std::clamp(out.cols, 0, 8), lanes1 = std::clamp(out.cols - 8, 0, 8);
  const __m256 bias0 = out.bias ? load_n(out.bias, lanes0) : _mm256_setzero_ps();
  const __m256 bias1 = out.bias && lanes1 ? load_n(out.bias + 8, lanes1) : _mm256_setzero_ps();
#pragma GCC unroll 6
  for (int i = 0; i < kRowsN; ++i) {
    float* row = out.c + i * out.ldc;
    uint16_t* row16 = out.c16 ? out.c16 + i * out.ldc : nullptr;
    finish_lanes(row, row16, lanes0, c[i][0], va, vb, out, bias0);
    if (kCols > 8 && lanes1) finish_lanes(row + 8, row16 ? row16 + 8 : nullptr, lanes1, c[i][1], va, vb, out, bias1);
  }
}

template <bool kRows, int kRowsN, int kCols>
struct TileAvx2 {
  static void run(int64_t kc, const float* A, int64_t lda, const float* Bp, const TileOut& out) {
    tile_avx2<kRows, kRowsN, kCols>(kc, A, lda, Bp, out);
  }
};
using TilesAvx2 = TileEntries<kMR, kNR, 8, TileAvx2>;

void depthwise_pixel_avx2(float* out, const float* const* in, const float* taps, const float* bias, int64_t C, int kk,
                          bool silu) {
  // Two chains of FMAs (even and odd taps) per vector, so that it is not bound by the FMA's
  // latency.
  const float *rows[kMaxDepthwiseTaps], *tap_rows[kMaxDepthwiseTaps];
  const int n = depthwise_taps_inside(rows, tap_rows, in, taps, C, kk);
  for_lanes(C, [&](int64_t c, int64_t count) {
    __m256 even = bias ? load_n(bias + c, count) : _mm256_setzero_ps(), odd = _mm256_setzero_ps();
    int t = 0;
    for (; t + 1 < n; t += 2) {
      even = _mm256_fmadd_ps(load_n(tap_rows[t] + c, count), load_n(rows[t] + c, count), even);
      odd = _mm256_fmadd_ps(load_n(tap_rows[t + 1] + c, count), load_n(rows[t + 1] + c, count), odd);
    }
    if (t < n) even = _mm256_fmadd_ps(load_n(tap_rows[t] + c, count), load_n(rows[t] + c, count), even);
    const __m256 sum = _mm256_add_ps(even, odd);
    store_n(out + c, silu ? _mm256_mul_ps(sum, sigmoid_ps_avx2(sum)) : sum, count);
  });
}

inline __m256i hash32_avx2(__m256i x) {
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
  x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x7feb352d));
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
  x = _mm256_mullo_epi32(x, _mm256_set1_epi32(static_cast<int>(0x846ca68bU)));
  return _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
}

void dropout_avx2(float* y, const float* x, float p, float scale, uint32_t key_a, uint32_t key_b, int64_t first,
                  int64_t n, bool accumulate) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i a = _mm256_set1_epi32(static_cast<int>(key_a)), b = _mm256_set1_epi32(static_cast<int>(key_b));
  const __m256 vp = _mm256_set1_ps(p), vscale = _mm256_set1_ps(scale), unit = _mm256_set1_ps(1.0f / 16777216.0f);
  for_lanes(n, [&](int64_t i, int64_t count) {
    __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(first + i))), lane);
    __m256i h = hash32_avx2(_mm256_add_epi32(hash32_avx2(_mm256_xor_si256(idx, a)), b));
    __m256 u = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(h, 8)), unit);
    __m256 keep = _mm256_cmp_ps(u, vp, _CMP_GE_OQ);
    __m256 v = _mm256_and_ps(keep, _mm256_mul_ps(load_n(x + i, count), vscale));
    if (accumulate) v = _mm256_add_ps(v, load_n(y + i, count));
    store_n(y + i, v, count);
  });
}

}  // namespace

const KernelSet kAvx2Kernels = {"avx2",
                                kMR,
                                kNR,
                                96,
                                768,
                                4080,
                                TilesAvx2::packed,
                                TilesAvx2::rows,
                                pack_gather_avx2<float>,
                                pack_copy_avx2,
                                pack_gather_avx2<uint16_t>,
                                pack_gather_avx2<float, true>,
                                pack_copy_bf16_avx2,
                                row_max_avx2,
                                exp_shift_sum_avx2,
                                gelu_forward_avx2<float>,
                                gelu_backward_avx2<float>,
                                sigmoid_avx2,
                                bias_silu_avx2,
                                dropout_avx2,
                                depthwise_pixel_avx2,
                                to_bf16_avx2,
                                through_bf16_avx2,
                                from_bf16_avx2,
                                gelu_forward_avx2<uint16_t>,
                                gelu_backward_avx2<uint16_t>};

}  // namespace lt::cpu
