// The micro-kernel entry points of a kernel set, from its register tile written once as
// Tile<kInPlace, kRows, kCols>::run: an instance per row count and per column width (a multiple
// of kColStep, a vector register's, up to the tile's width), so that a partial tile (a GEMM's
// last rows or columns, a convolution row's last pixels, a layer of 48 channels) runs with
// constant strides and spends no multiplies on rows or registers it does not keep.
#pragma once
#include <array>
#include <cstdint>
#include <utility>

#include "kernels.h"

namespace lt::cpu {

template <int kMR, int kNR, int kColStep, template <bool, int, int> class Tile>
struct TileEntries {
  static_assert(kNR % kColStep == 0, "the tile's width is a whole number of column steps");
  static constexpr int kWidths = kNR / kColStep;
  using Entry = void (*)(int64_t, const float*, int64_t, const float*, const TileOut&);
  using Table = std::array<std::array<Entry, kMR>, kWidths>;

  // kInPlace: A read as rows of a row-major matrix (row stride lda), else as packed panels.
  template <bool kInPlace, int kCols, int... kRowsMinus1>
  static constexpr std::array<Entry, kMR> rows_of(std::integer_sequence<int, kRowsMinus1...>) {
    return {&Tile<kInPlace, kRowsMinus1 + 1, kCols>::run...};
  }
  template <bool kInPlace, int... kWidthsMinus1>
  static constexpr Table make(std::integer_sequence<int, kWidthsMinus1...>) {
    return {rows_of<kInPlace, (kWidthsMinus1 + 1) * kColStep>(std::make_integer_sequence<int, kMR>())...};
  }
  static constexpr Table kPackedEntries = make<false>(std::make_integer_sequence<int, kWidths>());
  static constexpr Table kRowEntries = make<true>(std::make_integer_sequence<int, kWidths>());

  // Row counts outside 1..kMR and column counts outside 1..kNR never reach here (callers cut
  // whole tiles and their remainders).
  static bool fits(const TileOut& out) { return out.rows >= 1 && out.rows <= kMR && out.cols >= 1 && out.cols <= kNR; }
  static int width(const TileOut& out) { return (out.cols - 1) / kColStep; }
  static void packed(int64_t kc, const float* Ap, const float* Bp, const TileOut& out) {
    if (fits(out)) kPackedEntries[width(out)][out.rows - 1](kc, Ap, 0, Bp, out);
  }
  static void rows(int64_t kc, const float* A, int64_t lda, const float* Bp, const TileOut& out) {
    if (fits(out)) kRowEntries[width(out)][out.rows - 1](kc, A, lda, Bp, out);
  }
};

}  // namespace lt::cpu
