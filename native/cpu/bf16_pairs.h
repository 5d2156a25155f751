// Packing GEMM operands into bf16 pairs along k, what AVX512_BF16's VDPBF16PS and AMX's
// TDPBF16PS both read: one 32-bit word holds (X(line, 2q), X(line, 2q + 1)), the even k in the
// low half. fp32 operands are rounded on the way by VCVTNE2PS2BF16 (nearest even; like the
// products themselves, it treats subnormals as zero).
#pragma once
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "../dtype.h"
#include "avx512_registers.h"

#define LT_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

// GCC's AVX-512 intrinsics start from undefined vectors, which it then reports as maybe
// uninitialised; the kernel-set files are built with the same warning off.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace lt::cpu::bf16_pairs {

// k values per packed step: 16 pairs, one register of words per line.
constexpr int kStep = 32;
// A B panel's lines (columns of C), packed as two halves of 16.
constexpr int kPanel = 32;
// bf16 values in one half-step of a B panel: 16 pair rows of 16 words.
constexpr int kHalf = 16 * kStep;

// The 32 values k0.. of line `line` of a k-contiguous operand (X(line, k) at line * ld + k) as
// bf16 in one register; zero past kc and past the lines.
template <typename T>
LT_BF16_TARGET inline __m512i load_line(const T* X, int64_t ld, int64_t line, int64_t lines, int64_t k0, int64_t kc) {
  const int64_t n = std::clamp<int64_t>(kc - k0, 0, kStep);
  if (line >= lines || n == 0) return _mm512_setzero_si512();
  const T* src = X + line * ld + k0;
  const __mmask32 m = n == 32 ? ~0u : (1u << n) - 1;
  if constexpr (std::is_same_v<T, uint16_t>) {
    return _mm512_maskz_loadu_epi16(m, src);
  } else {
    const __mmask16 lo = static_cast<__mmask16>(m), hi = static_cast<__mmask16>(m >> 16);
    return (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, src + 16), _mm512_maskz_loadu_ps(lo, src));
  }
}

// 16 values of row k of a k-major operand (lines from `row`, `count` of them) as bf16 in the
// low halves of 32-bit lanes; zero past count.
template <typename T>
LT_BF16_TARGET inline __m512i row16(const T* row, int count) {
  const __mmask16 m = static_cast<__mmask16>(count >= 16 ? 0xffff : (1u << count) - 1);
  if constexpr (std::is_same_v<T, uint16_t>)
    return _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, row));
  else
    return _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, row)));
}

// The pairs (k, k + 1) of 16 lines from `first` of a k-major operand (X(line, k) at
// k * ld + line), zero past kc and past the lines.
template <typename T>
LT_BF16_TARGET inline __m512i pair_row(const T* X, int64_t ld, int64_t first, int64_t lines, int64_t k, int64_t kc) {
  const int count = static_cast<int>(std::clamp<int64_t>(lines - first, 0, 16));
  if (count == 0) return _mm512_setzero_si512();
  const __m512i lo = k < kc ? row16(X + k * ld + first, count) : _mm512_setzero_si512();
  const __m512i hi = k + 1 < kc ? row16(X + (k + 1) * ld + first, count) : _mm512_setzero_si512();
  return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
}

// Panels of 32 lines [0, lines) for k in [0, kc): per panel, per step of 32 k, two halves of
// 16 lines, each 16 pair rows q holding the words of its 16 lines. A line read along k (a
// weight in x W^T) is loaded and transposed in registers; a k-major one (dY W) interleaves two
// rows per pair row. Both AMX tiles and the VDPBF16PS micro-kernel read B this way.
template <typename T>
LT_BF16_TARGET void pack_b_panels(uint16_t* dst, const T* X, int64_t ld, bool k_contiguous, int64_t lines, int64_t kc) {
  const int64_t steps = (kc + kStep - 1) / kStep;
  for (int64_t j0 = 0; j0 < lines; j0 += kPanel)
    for (int64_t s = 0; s < steps; ++s)
      for (int half = 0; half < 2; ++half, dst += kHalf) {
        const int64_t first = j0 + half * 16;
        if (!k_contiguous) {
          for (int q = 0; q < 16; ++q)
            _mm512_storeu_si512(dst + q * kStep, pair_row(X, ld, first, lines, s * kStep + 2 * q, kc));
          continue;
        }
        __m512 r[16];
        for (int j = 0; j < 16; ++j) r[j] = _mm512_castsi512_ps(load_line(X, ld, first + j, lines, s * kStep, kc));
        transpose16(r);
        for (int q = 0; q < 16; ++q) _mm512_storeu_ps(reinterpret_cast<float*>(dst + q * kStep), r[q]);
      }
}

// Panels of `width` (<= 16) lines [0, lines) for k in [0, kc): per panel, pair q's words of
// its lines side by side, (pairs, width) words; lines past `lines` zero. What the VDPBF16PS
// micro-kernel broadcasts its A values from.
template <typename T>
LT_BF16_TARGET void pack_a_panels(uint32_t* dst, const T* X, int64_t ld, bool k_contiguous, int64_t lines, int width,
                                  int64_t kc) {
  const int64_t pairs = (kc + 1) / 2;
  const __mmask16 lanes = static_cast<__mmask16>((1u << width) - 1);
  for (int64_t l0 = 0; l0 < lines; l0 += width, dst += pairs * width) {
    if (!k_contiguous) {
      for (int64_t q = 0; q < pairs; ++q) {
        const __m512i w = pair_row(X, ld, l0, std::min<int64_t>(lines, l0 + width), 2 * q, kc);
        _mm512_mask_storeu_epi32(dst + q * width, lanes, w);
      }
      continue;
    }
    for (int64_t s = 0; s * kStep < kc; ++s) {
      __m512 r[16];
      for (int i = 0; i < 16; ++i)
        r[i] = i < width ? _mm512_castsi512_ps(load_line(X, ld, l0 + i, lines, s * kStep, kc)) : _mm512_setzero_ps();
      transpose16(r);
      const int64_t q_end = std::min<int64_t>(16, pairs - s * 16);
      for (int64_t q = 0; q < q_end; ++q)
        _mm512_mask_storeu_epi32(dst + (s * 16 + q) * width, lanes, _mm512_castps_si512(r[q]));
    }
  }
}

// The register tile of the VDPBF16PS micro-kernel: 12 rows by one 32-line B panel, 24 zmm sums.
constexpr int kTileRows = 12;

// C (12, 32), row stride ldc = alpha * A B + beta * C (C not read when beta == 0) over `pairs`
// pairs of k. B: a panel as pack_b_panels lays it out, from its first step. A: panels as
// pack_a_panels lays them out (pair q of row i at word q * 12 + i) or, kRows, rows of bf16
// values read in place (row i at A + i * lda values, read as pairs: an even count of values
// per row, or a zero after the last).
template <bool kRows>
LT_BF16_TARGET inline void dot_tile(int64_t pairs, const void* A, int64_t lda, const uint16_t* Bp, float* C,
                                    int64_t ldc, float alpha, float beta) {
  __m512 c[kTileRows][2];
#pragma GCC unroll 12
  for (int i = 0; i < kTileRows; ++i) c[i][0] = c[i][1] = _mm512_setzero_ps();
  const uint32_t* packed = static_cast<const uint32_t*>(A);
  const uint16_t* rows = static_cast<const uint16_t*>(A);
  for (int64_t q = 0; q < pairs; ++q) {
    const uint16_t* b = Bp + (q / 16) * 2 * kHalf + (q % 16) * kStep;  // its step, then its row
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b), b1 = (__m512bh)_mm512_loadu_si512(b + kHalf);
#pragma GCC unroll 12
    for (int i = 0; i < kTileRows; ++i) {
      uint32_t w;
      if constexpr (kRows)
        __builtin_memcpy(&w, rows + i * lda + 2 * q, sizeof w);  // 2-byte aligned
      else
        w = packed[q * kTileRows + i];
      const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(w));
      c[i][0] = _mm512_dpbf16_ps(c[i][0], a, b0);
      c[i][1] = _mm512_dpbf16_ps(c[i][1], a, b1);
    }
  }
#pragma GCC unroll 12
  for (int i = 0; i < kTileRows; ++i) store_tile_row(C + i * ldc, c[i][0], c[i][1], alpha, beta);
}

// bf16 values of a pair-packed operand: a B panel block of `lines` lines by kc k values, and
// the words of A panels of `width` lines.
inline int64_t b_panels_size(int64_t lines, int64_t kc) {
  return (lines + kPanel - 1) / kPanel * ((kc + kStep - 1) / kStep) * 2 * kHalf;
}
inline int64_t a_panels_words(int64_t lines, int width, int64_t kc) {
  return (lines + width - 1) / width * width * ((kc + 1) / 2);
}

}  // namespace lt::cpu::bf16_pairs

#pragma GCC diagnostic pop
#endif
