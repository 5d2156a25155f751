// WMMA for the CUDA test emulator (cuda_runtime.h). Each lane holds the whole 16x16 tile, so a
// fragment's contents do not depend on the hardware's undocumented lane layout. The *_sync
// calls are warp-collective: every lane waits for the whole warp before it loads, multiplies
// or stores, so a warp loading a tile and storing it back (an accumulation) reads it before
// any lane writes, as on a GPU. A store writes only the lane's share of the tile, so a lane
// reading the tile back before a __syncwarp misses the others'. (A missing __syncwarp between
// plain shared-memory writes and a load_matrix_sync of them is not caught: loads synchronise.)
// Pointers must be 256-bit aligned and ldm a multiple of 16 bytes, as the API requires.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <type_traits>

#include "cuda_runtime.h"

namespace nvcuda::wmma {

template <typename T>
void check_tile_address(const T* p, unsigned ldm) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0 || (ldm * sizeof(T)) % 16 != 0)
    throw std::logic_error("WMMA: a tile pointer not 256-bit aligned or an ldm not a multiple of 16 bytes");
}

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static constexpr int rows = std::is_same_v<Use, matrix_b> ? K : M;
  static constexpr int cols = std::is_same_v<Use, matrix_a> ? K : N;
  float x[rows * cols];  // row-major; values of T held exactly as fp32
  static constexpr int num_elements = rows * cols;
};

template <typename Use, int M, int N, int K, typename T, typename Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, float v) {
  for (float& e : f.x) e = v;
}

template <typename Use, int M, int N, int K, typename T, typename Layout>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const T* p, unsigned ldm) {
  check_tile_address(p, ldm);
  lt_emu::sync_warp();
  using F = fragment<Use, M, N, K, T, Layout>;
  constexpr bool col = std::is_same_v<Layout, col_major>;
  for (int r = 0; r < F::rows; ++r)
    for (int c = 0; c < F::cols; ++c) f.x[r * F::cols + c] = static_cast<float>(col ? p[c * ldm + r] : p[r * ldm + c]);
}

template <int M, int N, int K>
void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* p, unsigned ldm, layout_t layout) {
  check_tile_address(p, ldm);
  lt_emu::sync_warp();
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c) f.x[r * N + c] = layout == mem_col_major ? p[c * ldm + r] : p[r * ldm + c];
}

template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t layout) {
  check_tile_address(p, ldm);
  lt_emu::sync_warp();
  for (int e = lt_emu::lane_id(); e < M * N; e += 32) {
    const int r = e / N, c = e % N;
    (layout == mem_col_major ? p[c * ldm + r] : p[r * ldm + c]) = f.x[e];
  }
}

// d = a b + c with fp32 products and sums (the tensor cores' accumulation order differs).
template <int M, int N, int K, typename T, typename LA, typename LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
              const fragment<matrix_b, M, N, K, T, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
  lt_emu::sync_warp();
  float out[M * N];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float s = c.x[i * N + j];
      for (int k = 0; k < K; ++k) s += a.x[i * K + k] * b.x[k * N + j];
      out[i * N + j] = s;
    }
  for (int i = 0; i < M * N; ++i) d.x[i] = out[i];
}

}  // namespace nvcuda::wmma
