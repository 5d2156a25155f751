// Flash attention for head dim 64 on mma.sync m16n8k16 (bf16/fp16 operands, fp32 accumulation),
// the sm_80+ kernels. A block of four warps takes 64 rows (queries forward, keys backward),
// sixteen per warp, and walks the other side in tiles of 64 staged in shared memory.
// - Forward: the scores, probabilities, the output O and the softmax statistics (running max,
//   the lane's share of the row sum) stay in registers; P goes from the S accumulators straight
//   into the A operand of P V.
// - Backward: dK and dV of the warp's keys stay in registers over every query tile; S^T and dP^T
//   are recomputed per tile (with the forward's lse), dS goes through shared memory once for
//   dQ, which is added to global memory with atomics.
// Fragment layouts: warp_mma.cuh.
#include <cmath>
#include <type_traits>

#include "attention_tiles.cuh"
#include "common.cuh"
#include "warp_mma.cuh"

namespace lt::cuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;
constexpr int kSteps = kD / 16;       // 16-wide k-steps over a head
constexpr int kColTiles = kTile / 8;  // 8-wide accumulator tiles over 64 columns

template <typename T>
constexpr DType lowp_of = std::is_same_v<T, __nv_bfloat16> ? DType::bf16 : DType::f16;

template <typename T>
__device__ inline const uint16_t* bits(const T* p) {
  return reinterpret_cast<const uint16_t*>(p);
}

// A fragments (16 rows by 64) of rows [row0, row0 + 16) of a (kTile, kLdh) tile: one per k-step.
template <typename T>
__device__ inline void load_rows_a(uint32_t (&a)[kSteps][4], const T* tile, int row0, int lane) {
  for (int kk = 0; kk < kSteps; ++kk)
    ldmatrix_x4<false>(a[kk], bits(tile) + (row0 + lane % 16) * kLdh + kk * 16 + lane / 16 * 8);
}

// acc (16 x 64) = a (16 x 64) @ tile^T: each of the tile's 64 rows gives one output column
// (the B operand read from rows, as K for S = Q K^T).
template <DType L, typename T>
__device__ inline void times_rows_transposed(float (&acc)[kColTiles][4], const uint32_t (&a)[kSteps][4], const T* tile,
                                             int lane) {
  for (int n = 0; n < kColTiles; ++n) {
    acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    for (int kk = 0; kk < kSteps; kk += 2) {
      uint32_t b[4];  // k-steps kk and kk + 1 of output columns 8n..8n+7
      ldmatrix_x4<false>(b, bits(tile) + (n * 8 + lane % 8) * kLdh + kk * 16 + lane / 8 * 8);
      mma_16x8x16<L>(acc[n], a[kk], b[0], b[1]);
      mma_16x8x16<L>(acc[n], a[kk + 1], b[2], b[3]);
    }
  }
}

// acc (16 x 64) += a (16 rows by 16 tile rows) @ tile rows [row0, row0 + 16): the B operand
// read down the tile's columns (as V for O += P V).
template <DType L, typename T>
__device__ inline void add_times_rows(float (&acc)[kColTiles][4], const uint32_t (&a)[4], const T* tile, int row0,
                                      int lane) {
  for (int n = 0; n < kColTiles; n += 2) {
    uint32_t b[4];  // output columns 8n..8n+7 (b[0], b[1]) and the next eight (b[2], b[3])
    ldmatrix_x4<true>(b, bits(tile) + (row0 + lane % 16) * kLdh + n * 8 + lane / 16 * 8);
    mma_16x8x16<L>(acc[n], a, b[0], b[1]);
    mma_16x8x16<L>(acc[n + 1], a, b[2], b[3]);
  }
}

// Accumulator tiles 2j and 2j + 1, rounded to L: the A operand of their 16 columns.
template <DType L>
__device__ inline void accumulators_as_a(uint32_t (&a)[4], const float (&acc)[kColTiles][4], int j) {
  a[0] = pack2<L>(acc[2 * j][0], acc[2 * j][1]);
  a[1] = pack2<L>(acc[2 * j][2], acc[2 * j][3]);
  a[2] = pack2<L>(acc[2 * j + 1][0], acc[2 * j + 1][1]);
  a[3] = pack2<L>(acc[2 * j + 1][2], acc[2 * j + 1][3]);
}

__device__ inline void zero(float (&acc)[kColTiles][4]) {
  for (auto& tile : acc) tile[0] = tile[1] = tile[2] = tile[3] = 0.0f;
}

// Lane l of a warp holds accumulator rows l / 4 and l / 4 + 8 and, in each 8-wide tile n,
// columns 8n + 2 (l % 4) and the next.
struct LanePlace {
  int group, quad;
  __device__ explicit LanePlace(int lane) : group(lane / 4), quad(lane % 4) {}
  __device__ int row(int i) const { return group + (i >= 2 ? 8 : 0); }  // of accumulator element i
  __device__ int col(int n, int i) const { return n * 8 + 2 * quad + (i & 1); }
};

// Max (or sum) over the four lanes holding one accumulator row.
__device__ inline float row_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ inline float row_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

template <typename T>
__global__ void __launch_bounds__(kFlashThreads)
    flash_mma_forward_kernel(TensorOut o, float* lse, TensorRef q, TensorRef k, TensorRef v, int64_t N, int64_t M,
                             int64_t H, float scale) {
  constexpr DType L = lowp_of<T>;
  extern __shared__ __align__(128) unsigned char smem[];
  T* Qs = reinterpret_cast<T*>(smem);  // (64 queries, kLdh)
  T* Ks = Qs + kTile * kLdh;           // (64 keys, kLdh)
  T* Vs = Ks + kTile * kLdh;           // (64 keys, kLdh)
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const LanePlace at(lane);
  const int64_t q0 = blockIdx.x * (int64_t)kTile, h = blockIdx.y, b = blockIdx.z, ld = H * kD;
  load_tile(Qs, q, b * N * ld + h * kD, ld, q0, N);
  __syncthreads();
  uint32_t qa[kSteps][4];  // the warp's 16 queries
  load_rows_a(qa, Qs, warp * 16, lane);
  float out[kColTiles][4];  // (16 queries, 64 dims), unnormalised
  zero(out);
  // Per row held (group, group + 8): the running max of the scores in log2 units, and the sum
  // of this lane's probabilities (the row's four lanes add theirs at the end).
  float run_max[2] = {-INFINITY, -INFINITY}, lane_sum[2] = {0.0f, 0.0f};
  const float scale2 = scale * kLog2e;
  for (int64_t k0 = 0; k0 < M; k0 += kTile) {
    __syncthreads();  // every warp is done with the previous K and V
    load_tile(Ks, k, b * M * ld + h * kD, ld, k0, M);
    load_tile(Vs, v, b * M * ld + h * kD, ld, k0, M);
    __syncthreads();
    float s[kColTiles][4];  // S = Q K^T: (16 queries, 64 keys)
    times_rows_transposed<L>(s, qa, Ks, lane);
    float tile_max[2] = {-INFINITY, -INFINITY};
    for (int n = 0; n < kColTiles; ++n)
      for (int i = 0; i < 4; ++i) {
        s[n][i] = k0 + at.col(n, i) < M ? s[n][i] * scale2 : -INFINITY;
        tile_max[i / 2] = fmaxf(tile_max[i / 2], s[n][i]);
      }
    float alpha[2];
    for (int r = 0; r < 2; ++r) {
      const float m = fmaxf(run_max[r], row_max(tile_max[r]));  // finite unless the row holds NaN: key k0 exists
      alpha[r] = exp2f(run_max[r] - m);
      run_max[r] = m;
      lane_sum[r] *= alpha[r];
    }
    for (int n = 0; n < kColTiles; ++n)
      for (int i = 0; i < 4; ++i) {
        s[n][i] = exp2f(s[n][i] - run_max[i / 2]);  // now P, unnormalised
        lane_sum[i / 2] += s[n][i];
        out[n][i] *= alpha[i / 2];
      }
    for (int j = 0; j < kTile / 16; ++j) {  // O += P V, 16 keys at a time
      uint32_t pa[4];
      accumulators_as_a<L>(pa, s, j);
      add_times_rows<L>(out, pa, Vs, j * 16, lane);
    }
  }
  for (int r = 0; r < 2; ++r) {
    const float sum = row_sum(lane_sum[r]);
    const int64_t row = q0 + warp * 16 + at.group + 8 * r;
    if (row >= N) continue;
    const float inv = 1.0f / sum;
    for (int n = 0; n < kColTiles; ++n) {
      const int64_t e = (b * N + row) * ld + h * kD + at.col(n, 2 * r);
      if (o.type == DType::f32) {
        *reinterpret_cast<float2*>(o.f32() + e) = make_float2(out[n][2 * r] * inv, out[n][2 * r + 1] * inv);
      } else {
        o.set(e, out[n][2 * r] * inv);
        o.set(e + 1, out[n][2 * r + 1] * inv);
      }
    }
    if (lse && at.quad == 0) lse[(b * H + h) * N + row] = run_max[r] * kLn2 + logf(sum);
  }
}

template <typename T>
__global__ void __launch_bounds__(kFlashThreads)
    flash_mma_backward_kernel(float* dq, float* dk, float* dv, TensorRef dout, TensorRef q, TensorRef k, TensorRef v,
                              const float* lse, const float* delta, int64_t N, int64_t M, int64_t H, float scale) {
  constexpr DType L = lowp_of<T>;
  extern __shared__ __align__(128) unsigned char smem[];
  T* Ks = reinterpret_cast<T*>(smem);  // (64 keys, kLdh)
  T* Vs = Ks + kTile * kLdh;
  T* Qs = Vs + kTile * kLdh;  // (64 queries, kLdh)
  T* dOs = Qs + kTile * kLdh;
  T* dSs = dOs + kTile * kLdh;                                 // (64 queries, 64 keys)
  float* lse2 = reinterpret_cast<float*>(dSs + kTile * kLdh);  // (64) in log2 units
  float* delta_s = lse2 + kTile;                               // (64)
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const LanePlace at(lane);
  const int64_t k0 = blockIdx.x * (int64_t)kTile, h = blockIdx.y, b = blockIdx.z, ld = H * kD;
  load_tile(Ks, k, b * M * ld + h * kD, ld, k0, M);
  load_tile(Vs, v, b * M * ld + h * kD, ld, k0, M);
  __syncthreads();
  uint32_t ka[kSteps][4], va[kSteps][4];  // the warp's 16 keys
  load_rows_a(ka, Ks, warp * 16, lane);
  load_rows_a(va, Vs, warp * 16, lane);
  float dk_acc[kColTiles][4], dv_acc[kColTiles][4];  // (16 keys, 64 dims)
  zero(dk_acc);
  zero(dv_acc);
  const float scale2 = scale * kLog2e;
  const bool key_in[2] = {k0 + warp * 16 + at.row(0) < M, k0 + warp * 16 + at.row(2) < M};
  for (int64_t q0 = 0; q0 < N; q0 += kTile) {
    __syncthreads();  // every warp is done with the previous tile's Q, dO and dS
    load_tile(Qs, q, b * N * ld + h * kD, ld, q0, N);
    load_tile(dOs, dout, b * N * ld + h * kD, ld, q0, N);
    for (int i = threadIdx.x; i < kTile; i += blockDim.x) {
      const bool in = q0 + i < N;
      lse2[i] = in ? lse[(b * H + h) * N + q0 + i] * kLog2e : INFINITY;  // no probability past the end
      delta_s[i] = in ? delta[(b * H + h) * N + q0 + i] : 0.0f;
    }
    __syncthreads();
    float p[kColTiles][4], ds[kColTiles][4];  // P^T, then dP^T and dS^T: (16 keys, 64 queries)
    times_rows_transposed<L>(p, ka, Qs, lane);
    times_rows_transposed<L>(ds, va, dOs, lane);
    for (int n = 0; n < kColTiles; ++n)
      for (int i = 0; i < 4; ++i) {
        const int c = at.col(n, i);
        p[n][i] = key_in[i / 2] ? exp2f(p[n][i] * scale2 - lse2[c]) : 0.0f;
        ds[n][i] = p[n][i] * (ds[n][i] - delta_s[c]);
        dSs[c * kLdh + warp * 16 + at.row(i)] = to_lowp<T>(ds[n][i]);
      }
    for (int j = 0; j < kTile / 16; ++j) {  // dV += P^T dO, dK += dS^T Q, 16 queries at a time
      uint32_t pa[4], dsa[4];
      accumulators_as_a<L>(pa, p, j);
      accumulators_as_a<L>(dsa, ds, j);
      add_times_rows<L>(dv_acc, pa, dOs, j * 16, lane);
      add_times_rows<L>(dk_acc, dsa, Qs, j * 16, lane);
    }
    __syncthreads();          // dS of all 64 keys is in shared memory
    uint32_t dsq[kSteps][4];  // dS: the warp's 16 queries by the tile's 64 keys
    load_rows_a(dsq, dSs, warp * 16, lane);
    float dq_acc[kColTiles][4];  // (16 queries, 64 dims)
    zero(dq_acc);
    for (int j = 0; j < kTile / 16; ++j) add_times_rows<L>(dq_acc, dsq[j], Ks, j * 16, lane);
    for (int i = 0; i < 4; i += 2) {
      const int64_t row = q0 + warp * 16 + at.row(i);
      if (row >= N) continue;
      for (int n = 0; n < kColTiles; ++n) {
        float* g = dq + (b * N + row) * ld + h * kD + at.col(n, i);
        atomicAdd(g, scale * dq_acc[n][i]);
        atomicAdd(g + 1, scale * dq_acc[n][i + 1]);
      }
    }
  }
  for (int i = 0; i < 4; i += 2) {  // each block owns its keys: plain read-add-write
    const int64_t row = k0 + warp * 16 + at.row(i);
    if (row >= M) continue;
    for (int n = 0; n < kColTiles; ++n) {
      const int64_t e = (b * M + row) * ld + h * kD + at.col(n, i);
      float2* gk = reinterpret_cast<float2*>(dk + e);
      float2* gv = reinterpret_cast<float2*>(dv + e);
      const float2 k_old = *gk, v_old = *gv;
      *gk = make_float2(k_old.x + scale * dk_acc[n][i], k_old.y + scale * dk_acc[n][i + 1]);
      *gv = make_float2(v_old.x + dv_acc[n][i], v_old.y + dv_acc[n][i + 1]);
    }
  }
}

constexpr size_t kForwardSmem = 3 * kTile * kLdh * 2;
constexpr size_t kBackwardSmem = 5 * kTile * kLdh * 2 + 2 * kTile * 4;
static_assert(kForwardSmem <= 48 * 1024 && kBackwardSmem <= 48 * 1024, "within the default shared-memory limit");

}  // namespace

template <typename T>
void flash_mma_forward(TensorOut o, float* lse, TensorRef q, TensorRef k, TensorRef v, int64_t B, int64_t N, int64_t M,
                       int64_t H, float scale) {
  dim3 grid(static_cast<unsigned>((N + kTile - 1) / kTile), static_cast<unsigned>(H), static_cast<unsigned>(B));
  flash_mma_forward_kernel<T><<<grid, kFlashThreads, kForwardSmem>>>(o, lse, q, k, v, N, M, H, scale);
  LT_LAUNCHED("attention_forward (flash, mma.sync)");
}

template <typename T>
void flash_mma_backward(float* dq, float* dk, float* dv, TensorRef dout, TensorRef q, TensorRef k, TensorRef v,
                        const float* lse, const float* delta, int64_t B, int64_t N, int64_t M, int64_t H, float scale) {
  dim3 grid(static_cast<unsigned>((M + kTile - 1) / kTile), static_cast<unsigned>(H), static_cast<unsigned>(B));
  flash_mma_backward_kernel<T>
      <<<grid, kFlashThreads, kBackwardSmem>>>(dq, dk, dv, dout, q, k, v, lse, delta, N, M, H, scale);
  LT_LAUNCHED("attention_backward (flash, mma.sync)");
}

template void flash_mma_forward<__nv_bfloat16>(TensorOut, float*, TensorRef, TensorRef, TensorRef, int64_t, int64_t,
                                               int64_t, int64_t, float);
template void flash_mma_forward<__half>(TensorOut, float*, TensorRef, TensorRef, TensorRef, int64_t, int64_t, int64_t,
                                        int64_t, float);
template void flash_mma_backward<__nv_bfloat16>(float*, float*, float*, TensorRef, TensorRef, TensorRef, TensorRef,
                                                const float*, const float*, int64_t, int64_t, int64_t, int64_t, float);
template void flash_mma_backward<__half>(float*, float*, float*, TensorRef, TensorRef, TensorRef, TensorRef,
                                         const float*, const float*, int64_t, int64_t, int64_t, int64_t, float);

}  // namespace lt::cuda
