// AVX-512 kernels (compiled with -mavx512f -mavx512dq -mavx512bw -mavx512vl -mfma; only called
// after cpuid says so).
#include <immintrin.h>

#include <algorithm>
#include <limits>

#include "avx512_registers.h"
#include "kernels.h"
#include "tile_entries.h"
#include "vector_exp.h"

namespace lt::cpu {
namespace {

constexpr int kMR = 12, kNR = 32;  // 24 zmm accumulators + 2 B vectors + 1 broadcast

// 1 / (1 + exp(-x)), the division by a reciprocal estimate and one Newton step (within an ulp
// or two of it, at a fraction of its cost: the divider was most of SiLU's time); 1 / inf is 0.
inline __m512 sigmoid_ps_avx512(__m512 x) {
  const __m512 e = exp_ps_avx512(_mm512_sub_ps(_mm512_setzero_ps(), x));
  const __m512 one = _mm512_set1_ps(1.0f), d = _mm512_add_ps(one, e);
  const __m512 r = _mm512_rcp14_ps(d);
  const __m512 s = _mm512_fmadd_ps(r, _mm512_fnmadd_ps(d, r, one), r);
  return _mm512_mask_mov_ps(s,
                            _mm512_cmp_ps_mask(d, _mm512_set1_ps(std::numeric_limits<float>::infinity()), _CMP_EQ_OQ),
                            _mm512_setzero_ps());
}

// f32_to_bf16 on sixteen lanes, each result in the low half of its 32-bit lane.
inline __m512i bf16_bits(__m512 x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb)), 16);
  const __m512i magnitude = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
  const __mmask16 nan = _mm512_cmpgt_epi32_mask(magnitude, _mm512_set1_epi32(0x7f800000));
  const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
  return _mm512_mask_blend_epi32(nan, rounded, quiet);
}

// Lanes below n set (n may be negative or past 16).
inline __mmask16 lanes_below(int n) {
  return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

// One register of a tile's row leaving for C (or, row16 set, for c16) through the epilogue, as
// TileOut describes it.
inline void finish_lanes(float* row, uint16_t* row16, __mmask16 m, __m512 sums, __m512 va, __m512 vb,
                         const TileOut& out, __m512 bias) {
  __m512 v = out.beta == 0.0f ? _mm512_mul_ps(va, sums)
                              : _mm512_fmadd_ps(va, sums, _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m, row)));
  if (out.bias) v = _mm512_add_ps(v, bias);
  if (out.silu) v = _mm512_mul_ps(v, sigmoid_ps_avx512(v));
  if (row16)
    _mm256_mask_storeu_epi16(row16, m, _mm512_cvtepi32_epi16(bf16_bits(v)));
  else
    _mm512_mask_storeu_ps(row, m, v);
}

// The tile's first kRowsN rows and kCols columns (16 or 32), with A read from packed panels
// (A[p * mr + i]) or, kRows, from rows of A itself (A[i * lda + p]), which skips packing A for
// GEMMs of few columns. (Eight columns in a ymm register measured no faster than sixteen in a
// zmm on Zen 4, so the width steps by whole registers.) Inlined into each entry point so that
// the strides, the row count and the width are constants there; out is a copy, which stores to
// C cannot alias, so its fields stay in registers.
template <bool kRows, int kRowsN, int kCols>
__attribute__((always_inline)) inline void tile_avx512(int64_t kc, const float* A, int64_t lda, const float* Bp,
                                                       TileOut out) {
  constexpr bool kTwo = kCols > 16;
  __m512 c[kRowsN][2];
#pragma GCC unroll 12
  for (int i = 0; i < kRowsN; ++i) c[i][0] = c[i][1] = _mm512_setzero_ps();
  const int64_t row_stride = kRows ? lda : 1, step = kRows ? 1 : kMR;
  for (int64_t p = 0; p < kc; ++p, A += step, Bp += kNR) {
    const __m512 b0 = _mm512_load_ps(Bp), b1 = kTwo ? _mm512_load_ps(Bp + 16) : _mm512_setzero_ps();
#pragma GCC unroll 12
    for (int i = 0; i < kRowsN; ++i) {
      const __m512 a = _mm512_set1_ps(A[i * row_stride]);
      c[i][0] = _mm512_fmadd_ps(a, b0, c[i][0]);
      if constexpr (kTwo) c[i][1] = _mm512_fmadd_ps(a, b1, c[i][1]);
    }
  }
  if (kTwo && out.cols == kNR && !out.bias && !out.silu && !out.c16) {  // the common case: nothing to add
#pragma GCC unroll 12
    for (int i = 0; i < kRowsN; ++i) store_tile_row(out.c + i * out.ldc, c[i][0], c[i][1], out.alpha, out.beta);
    return;
  }
  const __mmask16 m0 = lanes_below(out.cols), m1 = lanes_below(out.cols - 16);
  const __m512 va = _mm512_set1_ps(out.alpha), vb = _mm512_set1_ps(out.beta);
  const __m512 bias0 = out.bias ? _mm512_maskz_loadu_ps(m0, out.bias) : _mm512_setzero_ps();
  const __m512 bias1 = out.bias && m1 ? _mm512_maskz_loadu_ps(m1, out.bias + 16) : _mm512_setzero_ps();
#pragma GCC unroll 12
  for (int i = 0; i < kRowsN; ++i) {
    float* row = out.c + i * out.ldc;
    uint16_t* row16 = out.c16 ? out.c16 + i * out.ldc : nullptr;
    finish_lanes(row, row16, m0, c[i][0], va, vb, out, bias0);
    if (kTwo && m1) finish_lanes(row + 16, row16 ? row16 + 16 : nullptr, m1, c[i][1], va, vb, out, bias1);
  }
}

template <bool kRows, int kRowsN, int kCols>
struct TileAvx512 {
  static void run(int64_t kc, const float* A, int64_t lda, const float* Bp, const TileOut& out) {
    tile_avx512<kRows, kRowsN, kCols>(kc, A, lda, Bp, out);
  }
};
using TilesAvx512 = TileEntries<kMR, kNR, 16, TileAvx512>;

// Up to 16 values at p as fp32 lanes (masked): fp32 as stored, bf16 widened (its bits are the
// top half of an fp32).
inline __m512 load16(__mmask16 m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 load16(__mmask16 m, const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

// x rounded to bf16 and widened back, as through_bf16 does it.
inline __m512 through_bf16_16(__m512 x) { return _mm512_castsi512_ps(_mm512_slli_epi32(bf16_bits(x), 16)); }

// Sixteen p at a time: up to 16 rows loaded along p, transposed in registers, and stored as
// 16 rows of the panel, a block of 16 lanes at a time.
// kRound: fp32 values rounded through bf16 as they are loaded.
template <typename T, bool kRound = false>
void pack_gather_avx512(float* dst, const T* src, int64_t ld, int64_t kc, int count, int width) {
  if (width % 16 != 0 && width > 16) return pack_gather_generic<T, kRound>(dst, src, ld, kc, count, width);
  for (int64_t p0 = 0; p0 < kc; p0 += 16) {
    const int np = static_cast<int>(std::min<int64_t>(16, kc - p0));
    const __mmask16 pmask = static_cast<__mmask16>((1u << np) - 1);
    for (int i0 = 0; i0 < width; i0 += 16) {
      const int lanes = std::min(16, width - i0);
      __m512 r[16];
      for (int i = 0; i < 16; ++i) {
        r[i] = i0 + i < count ? load16(pmask, src + (i0 + i) * ld + p0) : _mm512_setzero_ps();
        if constexpr (kRound) r[i] = through_bf16_16(r[i]);
      }
      transpose16(r);
      const __mmask16 lane_mask = static_cast<__mmask16>((1u << lanes) - 1);
      for (int p = 0; p < np; ++p) _mm512_mask_storeu_ps(dst + (p0 + p) * width + i0, lane_mask, r[p]);
    }
  }
}

template <typename T>
void pack_copy_avx512(float* dst, const T* src, int64_t ld, int64_t kc, int count, int width) {
  if (width > 32) return pack_copy_generic(dst, src, ld, kc, count, width);
  const __mmask16 lo = static_cast<__mmask16>((1u << std::min(count, 16)) - 1);
  const __mmask16 hi = static_cast<__mmask16>(count > 16 ? (1u << (count - 16)) - 1 : 0);
  const __mmask16 lo_out = static_cast<__mmask16>((1u << std::min(width, 16)) - 1);
  const __mmask16 hi_out = static_cast<__mmask16>(width > 16 ? (1u << (width - 16)) - 1 : 0);
  for (int64_t p = 0; p < kc; ++p, dst += width, src += ld) {
    _mm512_mask_storeu_ps(dst, lo_out, load16(lo, src));
    if (hi_out) _mm512_mask_storeu_ps(dst + 16, hi_out, load16(hi, src + 16));
  }
}

float row_max_avx512(const float* x, int64_t n) {
  __m512 m = _mm512_set1_ps(-__builtin_inff());
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
  if (i < n) {
    __mmask16 k = static_cast<__mmask16>((1u << (n - i)) - 1);
    m = _mm512_mask_max_ps(m, k, m, _mm512_maskz_loadu_ps(k, x + i));
  }
  return _mm512_reduce_max_ps(m);
}

float exp_shift_sum_avx512(float* x, int64_t n, float shift) {
  const __m512 vshift = _mm512_set1_ps(shift);
  __m512 sum = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 e = exp_ps_avx512(_mm512_sub_ps(_mm512_loadu_ps(x + i), vshift));
    _mm512_storeu_ps(x + i, e);
    sum = _mm512_add_ps(sum, e);
  }
  if (i < n) {
    __mmask16 k = static_cast<__mmask16>((1u << (n - i)) - 1);
    __m512 e = exp_ps_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), vshift));
    _mm512_mask_storeu_ps(x + i, k, e);
    sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(k, e));
  }
  return _mm512_reduce_add_ps(sum);
}

// Phi(x) and phi(x) for 16 lanes: the GELU forward and backward share them.
inline void normal_cdf_pdf(__m512 x, __m512* cdf, __m512* pdf) {
  const __m512 z = _mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f));
  const __m512 z_abs = _mm512_abs_ps(z);
  const __m512 e = exp_ps_avx512(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), z), z));  // exp(-x^2/2)
  __m512 erf = erf_abs_ps_avx512(z_abs, e);
  erf = _mm512_mask_sub_ps(erf, _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ), _mm512_setzero_ps(), erf);
  *cdf = _mm512_mul_ps(_mm512_set1_ps(0.5f), _mm512_add_ps(_mm512_set1_ps(1.0f), erf));
  *pdf = _mm512_mul_ps(_mm512_set1_ps(0.39894228040143268f), e);
}

template <typename F>
inline void for_lanes(int64_t n, F f) {  // full vectors, then one masked tail
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) f(i, static_cast<__mmask16>(0xffff));
  if (i < n) f(i, static_cast<__mmask16>((1u << (n - i)) - 1));
}

void to_bf16_avx512(uint16_t* dst, const float* src, int64_t n) {
  for_lanes(n, [&](int64_t i, __mmask16 m) {
    _mm256_mask_storeu_epi16(dst + i, m, _mm512_cvtepi32_epi16(bf16_bits(_mm512_maskz_loadu_ps(m, src + i))));
  });
}

void through_bf16_avx512(float* dst, const float* src, int64_t n) {
  for_lanes(n, [&](int64_t i, __mmask16 m) {
    _mm512_mask_storeu_ps(dst + i, m, through_bf16_16(_mm512_maskz_loadu_ps(m, src + i)));
  });
}

void from_bf16_avx512(float* dst, const uint16_t* src, int64_t n) {
  for_lanes(n, [&](int64_t i, __mmask16 m) { _mm512_mask_storeu_ps(dst + i, m, load16(m, src + i)); });
}

template <typename X>
void gelu_forward_avx512(float* y, const X* x, int64_t n) {
  for_lanes(n, [&](int64_t i, __mmask16 m) {
    __m512 v = load16(m, x + i), cdf, pdf;
    normal_cdf_pdf(v, &cdf, &pdf);
    _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(v, cdf));
  });
}

template <typename X>
void gelu_backward_avx512(float* dx, const float* dy, const X* x, int64_t n) {
  for_lanes(n, [&](int64_t i, __mmask16 m) {
    __m512 v = load16(m, x + i), cdf, pdf;
    normal_cdf_pdf(v, &cdf, &pdf);
    __m512 g = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, dy + i), _mm512_fmadd_ps(v, pdf, cdf));
    _mm512_mask_storeu_ps(dx + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, dx + i), g));
  });
}

void sigmoid_avx512(float* y, const float* x, int64_t n, bool times_x) {
  for_lanes(n, [&](int64_t i, __mmask16 m) {
    __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    __m512 s = sigmoid_ps_avx512(v);
    _mm512_mask_storeu_ps(y + i, m, times_x ? _mm512_mul_ps(v, s) : s);
  });
}

void bias_silu_avx512(float* c, int64_t ldc, int64_t rows, int64_t cols, const float* bias, bool silu) {
  for (int64_t r = 0; r < rows; ++r, c += ldc)
    for_lanes(cols, [&](int64_t j, __mmask16 m) {
      __m512 v = _mm512_maskz_loadu_ps(m, c + j);
      if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bias + j));
      if (silu) v = _mm512_mul_ps(v, sigmoid_ps_avx512(v));
      _mm512_mask_storeu_ps(c + j, m, v);
    });
}

// Four blocks of 16 channels at a time, each its own chain of FMAs: one chain per block waited
// on the FMA's latency at every tap. Each channel still sums bias, then the taps in order.
void depthwise_pixel_avx512(float* out, const float* const* in, const float* taps, const float* bias, int64_t C, int kk,
                            bool silu) {
  const float *rows[kMaxDepthwiseTaps], *tap_rows[kMaxDepthwiseTaps];
  const int n = depthwise_taps_inside(rows, tap_rows, in, taps, C, kk);
  constexpr int kBlocks = 4;
  int64_t c = 0;
  for (; c + 16 * kBlocks <= C; c += 16 * kBlocks) {
    __m512 acc[kBlocks];
    for (int j = 0; j < kBlocks; ++j) acc[j] = bias ? _mm512_loadu_ps(bias + c + 16 * j) : _mm512_setzero_ps();
    for (int t = 0; t < n; ++t)
      for (int j = 0; j < kBlocks; ++j)
        acc[j] =
            _mm512_fmadd_ps(_mm512_loadu_ps(tap_rows[t] + c + 16 * j), _mm512_loadu_ps(rows[t] + c + 16 * j), acc[j]);
    for (int j = 0; j < kBlocks; ++j)
      _mm512_storeu_ps(out + c + 16 * j, silu ? _mm512_mul_ps(acc[j], sigmoid_ps_avx512(acc[j])) : acc[j]);
  }
  for_lanes(C - c, [&](int64_t i, __mmask16 m) {
    __m512 acc = bias ? _mm512_maskz_loadu_ps(m, bias + c + i) : _mm512_setzero_ps();
    for (int t = 0; t < n; ++t)
      acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, tap_rows[t] + c + i), _mm512_maskz_loadu_ps(m, rows[t] + c + i),
                            acc);
    _mm512_mask_storeu_ps(out + c + i, m, silu ? _mm512_mul_ps(acc, sigmoid_ps_avx512(acc)) : acc);
  });
}

inline __m512i hash32_avx512(__m512i x) {
  x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
  x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x7feb352d));
  x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
  x = _mm512_mullo_epi32(x, _mm512_set1_epi32(static_cast<int>(0x846ca68bU)));
  return _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
}

void dropout_avx512(float* y, const float* x, float p, float scale, uint32_t key_a, uint32_t key_b, int64_t first,
                    int64_t n, bool accumulate) {
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i a = _mm512_set1_epi32(static_cast<int>(key_a)), b = _mm512_set1_epi32(static_cast<int>(key_b));
  const __m512 vp = _mm512_set1_ps(p), vscale = _mm512_set1_ps(scale), unit = _mm512_set1_ps(1.0f / 16777216.0f);
  for_lanes(n, [&](int64_t i, __mmask16 m) {
    __m512i idx = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(first + i))), lane);
    __m512i h = hash32_avx512(_mm512_add_epi32(hash32_avx512(_mm512_xor_si512(idx, a)), b));
    __m512 u = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(h, 8)), unit);
    __mmask16 keep = _mm512_cmp_ps_mask(u, vp, _CMP_GE_OQ) & m;
    __m512 v = _mm512_maskz_mul_ps(keep, _mm512_maskz_loadu_ps(m, x + i), vscale);
    if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, y + i));
    _mm512_mask_storeu_ps(y + i, m, v);
  });
}

}  // namespace

const KernelSet kAvx512Kernels = {"avx512",
                                  kMR,
                                  kNR,
                                  96,
                                  768,
                                  4096,
                                  TilesAvx512::packed,
                                  TilesAvx512::rows,
                                  pack_gather_avx512<float>,
                                  pack_copy_avx512<float>,
                                  pack_gather_avx512<uint16_t>,
                                  pack_gather_avx512<float, true>,
                                  pack_copy_avx512<uint16_t>,
                                  row_max_avx512,
                                  exp_shift_sum_avx512,
                                  gelu_forward_avx512<float>,
                                  gelu_backward_avx512<float>,
                                  sigmoid_avx512,
                                  bias_silu_avx512,
                                  dropout_avx512,
                                  depthwise_pixel_avx512,
                                  to_bf16_avx512,
                                  through_bf16_avx512,
                                  from_bf16_avx512,
                                  gelu_forward_avx512<uint16_t>,
                                  gelu_backward_avx512<uint16_t>};

}  // namespace lt::cpu
