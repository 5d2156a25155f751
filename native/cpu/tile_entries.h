// The micro-kernel entry points of a kernel set, from its register tile written once as
// Tile<kRows, kRowsN>::run: an instance per row count, so that a partial tile (a GEMM's last
// rows, a convolution row's last pixels) runs with constant strides and no wasted rows.
#pragma once
#include <array>
#include <cstdint>
#include <utility>

#include "kernels.h"

namespace lt::cpu {

template <int kMR, template <bool, int> class Tile>
struct TileEntries {
  using Entry = void (*)(int64_t, const float*, int64_t, const float*, const TileOut&);

  // kInPlace: A read as rows of a row-major matrix (row stride lda), else as packed panels.
  template <bool kInPlace, int... kRowsMinus1>
  static constexpr std::array<Entry, kMR> make(std::integer_sequence<int, kRowsMinus1...>) {
    return {&Tile<kInPlace, kRowsMinus1 + 1>::run...};
  }
  static constexpr std::array<Entry, kMR> kPackedEntries = make<false>(std::make_integer_sequence<int, kMR>());
  static constexpr std::array<Entry, kMR> kRowEntries = make<true>(std::make_integer_sequence<int, kMR>());

  // Row counts outside 1..kMR never reach here (callers cut whole tiles and their remainders).
  static void packed(int64_t kc, const float* Ap, const float* Bp, const TileOut& out) {
    if (out.rows >= 1 && out.rows <= kMR) kPackedEntries[out.rows - 1](kc, Ap, 0, Bp, out);
  }
  static void rows(int64_t kc, const float* A, int64_t lda, const float* Bp, const TileOut& out) {
    if (out.rows >= 1 && out.rows <= kMR) kRowEntries[out.rows - 1](kc, A, lda, Bp, out);
  }
};

}  // namespace lt::cpu
