// Multi-head attention, heads interleaved in channels. o (B, N, H*d), lse (B, H, N);
// q (B, N, H*d); k, v (B, M, H*d).
// - bf16/fp16 compute with head dim 64: flash attention on tensor cores, fp32 accumulation,
//   64-query x 64-key tiles, online softmax, nothing of size (N, M) in memory; the backward
//   recomputes P per tile, keeps dK/dV of a key tile in registers and adds dQ with atomics.
//   Two kernels: mma.sync m16n8k16 (attention_mma.cu, the default) and WMMA 16x16x16 (here,
//   its scores and output staged through shared memory).
// - otherwise (fp32, other head dims): one block per query (or key) row with the row's scores
//   in shared memory.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "attention_tiles.cuh"
#include "common.cuh"
#include "cuda_ops.h"
#include "profile.h"

namespace lt::cuda {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kLdf = kTile + 4;
static_assert(kD == kTile, "warp_rows_times_tile takes the inner dimension of both products as 64");

template <typename T>
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major>;
template <typename T>
using FragAT = wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::col_major>;
template <typename T>
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major>;
template <typename T>
using FragBT = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// out (16, 64) fp32 (row stride kLdf) = a (16 rows of a tile) @ op(b) for a (64, 64) tile b:
// op(b) = b^T when Transposed (each row of b gives an output column), else b. With accumulate,
// adds to out instead.
template <bool Transposed, typename T>
__device__ inline void warp_rows_times_tile(float* out, const T* a, const T* b, bool accumulate) {
  using FragOpB = std::conditional_t<Transposed, FragBT<T>, FragB<T>>;
  FragA<T> fa[kD / 16];  // the warp's rows, loaded once for every output column block
  for (int kk = 0; kk < kD / 16; ++kk) wmma::load_matrix_sync(fa[kk], a + kk * 16, kLdh);
  for (int n = 0; n < kTile / 16; ++n) {
    FragC acc;
    if (accumulate)
      wmma::load_matrix_sync(acc, out + n * 16, kLdf, wmma::mem_row_major);
    else
      wmma::fill_fragment(acc, 0.0f);
    for (int kk = 0; kk < kD / 16; ++kk) {
      FragOpB fb;
      wmma::load_matrix_sync(fb, Transposed ? b + n * 16 * kLdh + kk * 16 : b + kk * 16 * kLdh + n * 16, kLdh);
      wmma::mma_sync(acc, fa[kk], fb, acc);
    }
    wmma::store_matrix_sync(out + n * 16, acc, kLdf, wmma::mem_row_major);
  }
}

// Lanes 2r and 2r+1 of a warp share row r of its 16 rows, 32 columns each. Lane pairs visit
// their columns in a rotated order, so the 32 lanes touch 32 different shared-memory banks
// (row stride kLdf = 68 floats would otherwise put rows r and r+8 in the same bank).
struct RowHalf {
  int row;    // within the block's 64
  int first;  // first column of the half: 0 or 32
  int rot;    // rotation of the visiting order
  __device__ RowHalf(int warp, int lane)
      : row(warp * 16 + lane / 2), first((lane % 2) * 32), rot(lane / 2 + 16 * (lane % 2)) {}
  __device__ int col(int j) const { return first + ((j + rot) & 31); }
};

template <typename T>
__global__ void __launch_bounds__(kFlashThreads)
    flash_forward_kernel(TensorOut o, float* lse, TensorRef q, TensorRef k, TensorRef v, int64_t N, int64_t M,
                         int64_t H, float scale) {
  extern __shared__ __align__(128) unsigned char smem[];
  T* Qs = reinterpret_cast<T*>(smem);  // (64 queries, kLdh)
  T* Ks = Qs + kTile * kLdh;           // (64 keys, kLdh)
  T* Vs = Ks + kTile * kLdh;
  T* Ps = Vs + kTile * kLdh;                                // (64 queries, 64 keys) probabilities
  float* Ss = reinterpret_cast<float*>(Ps + kTile * kLdh);  // (64, kLdf) scores
  float* Os = Ss + kTile * kLdf;                            // (64, kLdf) unnormalised output
  float* row_max = Os + kTile * kLdf;
  float* row_sum = row_max + kTile;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t q0 = blockIdx.x * (int64_t)kTile, h = blockIdx.y, b = blockIdx.z, ld = H * kD;
  load_tile(Qs, q, b * N * ld + h * kD, ld, q0, N);
  for (int i = threadIdx.x; i < kTile * kLdf; i += blockDim.x) Os[i] = 0.0f;
  for (int i = threadIdx.x; i < kTile; i += blockDim.x) row_max[i] = -INFINITY, row_sum[i] = 0.0f;
  // Each warp owns 16 query rows.
  const RowHalf half(warp, lane);
  const int r = half.row;
  for (int64_t k0 = 0; k0 < M; k0 += kTile) {
    __syncthreads();  // the previous tile's K and V are no longer read
    load_tile(Ks, k, b * M * ld + h * kD, ld, k0, M);
    load_tile(Vs, v, b * M * ld + h * kD, ld, k0, M);
    __syncthreads();
    warp_rows_times_tile<true>(Ss + warp * 16 * kLdf, Qs + warp * 16 * kLdh, Ks, false);  // S = Q K^T
    __syncwarp();
    float* srow = Ss + r * kLdf;
    float mx = -INFINITY;
    for (int j = 0; j < 32; ++j) {
      const int c = half.col(j);
      const float s = k0 + c < M ? srow[c] * scale : -INFINITY;
      srow[c] = s;
      mx = fmaxf(mx, s);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float m_old = row_max[r], m_new = fmaxf(m_old, mx);  // finite: key k0 is visible
    const float alpha = expf(m_old - m_new);
    float sum = 0.0f;
    for (int j = 0; j < 32; ++j) {
      const int c = half.col(j);
      const float p = expf(srow[c] - m_new);
      Ps[r * kLdh + c] = to_lowp<T>(p);
      sum += p;
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    for (int j = 0; j < 32; ++j) Os[r * kLdf + half.col(j)] *= alpha;
    __syncwarp();
    if (lane % 2 == 0) row_max[r] = m_new, row_sum[r] = row_sum[r] * alpha + sum;
    __syncwarp();
    warp_rows_times_tile<false>(Os + warp * 16 * kLdf, Ps + warp * 16 * kLdh, Vs, true);  // O += P V
  }
  __syncwarp();
  // Written row by row, each lane two adjacent columns: one contiguous store per row.
  for (int rr = warp * 16; rr < warp * 16 + 16 && q0 + rr < N; ++rr) {
    const float inv = 1.0f / row_sum[rr];
    const float2 v2 = *reinterpret_cast<const float2*>(Os + rr * kLdf + 2 * lane);
    const int64_t at = (b * N + q0 + rr) * ld + h * kD + 2 * lane;
    if (o.type == DType::f32) {
      *reinterpret_cast<float2*>(o.f32() + at) = make_float2(v2.x * inv, v2.y * inv);
    } else {
      o.set(at, v2.x * inv);
      o.set(at + 1, v2.y * inv);
    }
  }
  if (lane < 16 && q0 + warp * 16 + lane < N && lse)
    lse[(b * H + h) * N + q0 + warp * 16 + lane] = row_max[warp * 16 + lane] + logf(row_sum[warp * 16 + lane]);
}

// One block per (64-key tile, head, batch): dK, dV of the tile over every query tile; dQ added
// with atomics. delta (B, H, N) = rowsum(dout * o).
template <typename T>
__global__ void __launch_bounds__(kFlashThreads)
    flash_backward_kernel(float* dq, float* dk, float* dv, TensorRef dout, TensorRef q, TensorRef k, TensorRef v,
                          const float* lse, const float* delta, int64_t N, int64_t M, int64_t H, float scale) {
  extern __shared__ __align__(128) unsigned char smem[];
  T* Ks = reinterpret_cast<T*>(smem);  // (64 keys, kLdh)
  T* Vs = Ks + kTile * kLdh;
  T* Qs = Vs + kTile * kLdh;  // (64 queries, kLdh)
  T* dOs = Qs + kTile * kLdh;
  T* Ps = dOs + kTile * kLdh;  // (64 queries, 64 keys)
  T* dSs = Ps + kTile * kLdh;
  float* Ss = reinterpret_cast<float*>(dSs + kTile * kLdh);  // (64, kLdf): S, later dQ and dK/dV staging
  float* dPs = Ss + kTile * kLdf;
  float* lse_s = dPs + kTile * kLdf;
  float* delta_s = lse_s + kTile;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t k0 = blockIdx.x * (int64_t)kTile, h = blockIdx.y, b = blockIdx.z, ld = H * kD;
  load_tile(Ks, k, b * M * ld + h * kD, ld, k0, M);
  load_tile(Vs, v, b * M * ld + h * kD, ld, k0, M);
  FragC dk_acc[kD / 16], dv_acc[kD / 16];
  for (int n = 0; n < kD / 16; ++n) wmma::fill_fragment(dk_acc[n], 0.0f), wmma::fill_fragment(dv_acc[n], 0.0f);
  const RowHalf half(warp, lane);
  const int r = half.row;
  for (int64_t q0 = 0; q0 < N; q0 += kTile) {
    __syncthreads();
    load_tile(Qs, q, b * N * ld + h * kD, ld, q0, N);
    load_tile(dOs, dout, b * N * ld + h * kD, ld, q0, N);
    for (int i = threadIdx.x; i < kTile; i += blockDim.x) {
      const bool in = q0 + i < N;
      lse_s[i] = in ? lse[(b * H + h) * N + q0 + i] : INFINITY;  // exp(s - inf) = 0: no probability
      delta_s[i] = in ? delta[(b * H + h) * N + q0 + i] : 0.0f;
    }
    __syncthreads();
    warp_rows_times_tile<true>(Ss + warp * 16 * kLdf, Qs + warp * 16 * kLdh, Ks, false);    // S = Q K^T
    warp_rows_times_tile<true>(dPs + warp * 16 * kLdf, dOs + warp * 16 * kLdh, Vs, false);  // dP = dO V^T
    __syncwarp();
    for (int j = 0; j < 32; ++j) {
      const int c = half.col(j);
      const float p = k0 + c < M ? expf(Ss[r * kLdf + c] * scale - lse_s[r]) : 0.0f;
      Ps[r * kLdh + c] = to_lowp<T>(p);
      dSs[r * kLdh + c] = to_lowp<T>(p * (dPs[r * kLdf + c] - delta_s[r]));
    }
    __syncthreads();
    // dV += P^T dO and dK += dS^T Q for the warp's 16 keys (columns of P and dS).
    for (int kk = 0; kk < kTile / 16; ++kk) {
      FragAT<T> fp, fds;
      wmma::load_matrix_sync(fp, Ps + kk * 16 * kLdh + warp * 16, kLdh);
      wmma::load_matrix_sync(fds, dSs + kk * 16 * kLdh + warp * 16, kLdh);
      for (int n = 0; n < kD / 16; ++n) {
        FragB<T> fdo, fq;
        wmma::load_matrix_sync(fdo, dOs + kk * 16 * kLdh + n * 16, kLdh);
        wmma::load_matrix_sync(fq, Qs + kk * 16 * kLdh + n * 16, kLdh);
        wmma::mma_sync(dv_acc[n], fp, fdo, dv_acc[n]);
        wmma::mma_sync(dk_acc[n], fds, fq, dk_acc[n]);
      }
    }
    // dQ (the warp's 16 queries) += scale dS K, staged through Ss and added atomically.
    warp_rows_times_tile<false>(Ss + warp * 16 * kLdf, dSs + warp * 16 * kLdh, Ks, false);
    __syncwarp();
    for (int rr = warp * 16; rr < warp * 16 + 16 && q0 + rr < N; ++rr) {  // coalesced, row by row
      float* dqrow = dq + (b * N + q0 + rr) * ld + h * kD + 2 * lane;
      const float2 g = *reinterpret_cast<const float2*>(Ss + rr * kLdf + 2 * lane);
      atomicAdd(dqrow, scale * g.x);
      atomicAdd(dqrow + 1, scale * g.y);
    }
  }
  // dK, dV of the warp's 16 keys: staged through shared memory, added to the outputs.
  __syncthreads();
  for (int n = 0; n < kD / 16; ++n) {
    wmma::store_matrix_sync(Ss + warp * 16 * kLdf + n * 16, dk_acc[n], kLdf, wmma::mem_row_major);
    wmma::store_matrix_sync(dPs + warp * 16 * kLdf + n * 16, dv_acc[n], kLdf, wmma::mem_row_major);
  }
  __syncwarp();
  for (int rr = warp * 16; rr < warp * 16 + 16 && k0 + rr < M; ++rr) {  // coalesced, row by row
    float2* dk2 = reinterpret_cast<float2*>(dk + (b * M + k0 + rr) * ld + h * kD + 2 * lane);
    float2* dv2 = reinterpret_cast<float2*>(dv + (b * M + k0 + rr) * ld + h * kD + 2 * lane);
    const float2 gk = *reinterpret_cast<const float2*>(Ss + rr * kLdf + 2 * lane);
    const float2 gv = *reinterpret_cast<const float2*>(dPs + rr * kLdf + 2 * lane);
    const float2 k_old = *dk2, v_old = *dv2;
    *dk2 = make_float2(k_old.x + scale * gk.x, k_old.y + scale * gk.y);
    *dv2 = make_float2(v_old.x + gv.x, v_old.y + gv.y);
  }
}

constexpr size_t kFlashForwardSmem = 4 * kTile * kLdh * 2 + 2 * kTile * kLdf * 4 + 2 * kTile * 4;
constexpr size_t kFlashBackwardSmem = 6 * kTile * kLdh * 2 + 2 * kTile * kLdf * 4 + 2 * kTile * 4;

enum class Flash { none, wmma, mma };

// Which kernels compute attention: the tensor-core flash kernels need a low-precision compute
// type, head dim 64 and 16-byte aligned tensors (they load four elements at a time); otherwise
// the row kernels. LORA_TRAIN_FLASH picks among the flash kernels: mma (the default: mma.sync,
// registers end to end), wmma (the WMMA tiles, staged through shared memory) or 0 (the row
// kernels at every precision, to tell a kernel fault apart). Read at each call.
Flash flash_kind(DType compute, int64_t d, std::initializer_list<const void*> tensors) {
  const char* choice = std::getenv("LORA_TRAIN_FLASH");
  const std::string v = choice ? choice : "mma";
  if (v != "mma" && v != "wmma" && v != "0")
    throw std::invalid_argument("Expected mma, wmma or 0 for LORA_TRAIN_FLASH but received " + v);
  if (v == "0" || compute == DType::f32 || d != kD) return Flash::none;
  for (const void* t : tensors)
    if (reinterpret_cast<uintptr_t>(t) % 16) return Flash::none;
  return v == "wmma" ? Flash::wmma : Flash::mma;
}

// Raises a kernel's dynamic shared-memory limit above the default 48 KB; callers keep the
// result in a static of their own so it happens once per kernel.
template <typename Kernel>
bool allow_shared_memory(Kernel kernel, size_t bytes) {
  LT_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  return true;
}

template <typename T>
void flash_forward(TensorOut o, float* lse, TensorRef q, TensorRef k, TensorRef v, int64_t B, int64_t N, int64_t M,
                   int64_t H, float scale) {
  static const bool configured = allow_shared_memory(flash_forward_kernel<T>, kFlashForwardSmem);
  (void)configured;
  dim3 grid(static_cast<unsigned>((N + kTile - 1) / kTile), static_cast<unsigned>(H), static_cast<unsigned>(B));
  flash_forward_kernel<T><<<grid, kFlashThreads, kFlashForwardSmem>>>(o, lse, q, k, v, N, M, H, scale);
  LT_LAUNCHED("attention_forward (flash)");
}

template <typename T>
void flash_backward(float* dq, float* dk, float* dv, const float* dout, TensorRef q, TensorRef k, TensorRef v,
                    const float* lse, const float* delta, int64_t B, int64_t N, int64_t M, int64_t H, float scale) {
  static const bool configured = allow_shared_memory(flash_backward_kernel<T>, kFlashBackwardSmem);
  (void)configured;
  dim3 grid(static_cast<unsigned>((M + kTile - 1) / kTile), static_cast<unsigned>(H), static_cast<unsigned>(B));
  flash_backward_kernel<T>
      <<<grid, kFlashThreads, kFlashBackwardSmem>>>(dq, dk, dv, dout, q, k, v, lse, delta, N, M, H, scale);
  LT_LAUNCHED("attention_backward (flash)");
}

constexpr int kAttnThreads = 128;

// One block per (batch, head, query). Scores in shared memory (M floats).
__global__ void attention_forward_kernel(TensorOut o, float* lse, const float* q, const float* k, const float* v,
                                         const uint8_t* key_mask, bool causal, int64_t N, int64_t M, int64_t H,
                                         int64_t d, float scale) {
  extern __shared__ float scores[];
  const int64_t i = blockIdx.x, h = blockIdx.y, b = blockIdx.z, ld = H * d;
  const float* qi = q + (b * N + i) * ld + h * d;
  float local_max = -INFINITY;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    const bool visible = (!key_mask || key_mask[b * M + j]) && (!causal || j <= i);
    float s = -INFINITY;
    if (visible) {
      const float* kj = k + (b * M + j) * ld + h * d;
      s = 0.0f;
      for (int64_t c = 0; c < d; ++c) s += qi[c] * kj[c];
      s *= scale;
    }
    scores[j] = s;
    local_max = fmaxf(local_max, s);
  }
  // block max
  __shared__ float red[32];
  for (int off = 16; off > 0; off >>= 1) local_max = fmaxf(local_max, __shfl_xor_sync(0xffffffffu, local_max, off));
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = local_max;
  __syncthreads();
  float row_max = -INFINITY;
  for (int w = 0; w < (int)(blockDim.x + 31) / 32; ++w) row_max = fmaxf(row_max, red[w]);
  __syncthreads();
  float local_sum = 0.0f;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    // No visible key: nothing, unless the score is NaN (a NaN query), which stays NaN as in PyTorch.
    const float p = row_max == -INFINITY && !isnan(scores[j]) ? 0.0f : expf(scores[j] - row_max);
    scores[j] = p;
    local_sum += p;
  }
  const float row_sum = block_sum(local_sum);
  const float inv = row_sum == 0.0f ? 0.0f : 1.0f / row_sum;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j < M; ++j) acc += scores[j] * v[(b * M + j) * ld + h * d + c];
    o.set((b * N + i) * ld + h * d + c, acc * inv);
  }
  if (lse && threadIdx.x == 0) lse[(b * H + h) * N + i] = row_max + logf(row_sum);
}

// delta (B, H, N) = rowsum(dout * o) per head.
__global__ void attention_delta_kernel(float* delta, const float* dout, TensorRef o, int64_t B, int64_t N, int64_t H,
                                       int64_t d) {
  LT_FOR(t, B * H * N) {
    const int64_t i = t % N, h = (t / N) % H, b = t / (N * H), ld = H * d;
    float s = 0.0f;
    for (int64_t c = 0; c < d; ++c) s += dout[(b * N + i) * ld + h * d + c] * o.at((b * N + i) * ld + h * d + c);
    delta[t] = s;
  }
}

// One block per (batch, head, query): dq_i += scale * sum_j ds_ij k_j.
__global__ void attention_dq_kernel(float* dq, const float* dout, const float* q, const float* k, const float* v,
                                    const float* lse, const float* delta, int64_t N, int64_t M, int64_t H, int64_t d,
                                    float scale) {
  extern __shared__ float ds[];
  const int64_t i = blockIdx.x, h = blockIdx.y, b = blockIdx.z, ld = H * d;
  const float* qi = q + (b * N + i) * ld + h * d;
  const float* doi = dout + (b * N + i) * ld + h * d;
  const float l = lse[(b * H + h) * N + i], dl = delta[(b * H + h) * N + i];
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    const float* kj = k + (b * M + j) * ld + h * d;
    const float* vj = v + (b * M + j) * ld + h * d;
    float s = 0.0f, dp = 0.0f;
    for (int64_t c = 0; c < d; ++c) {
      s += qi[c] * kj[c];
      dp += doi[c] * vj[c];
    }
    const float p = expf(s * scale - l);
    ds[j] = p * (dp - dl);
  }
  __syncthreads();
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j < M; ++j) acc += ds[j] * k[(b * M + j) * ld + h * d + c];
    dq[(b * N + i) * ld + h * d + c] += scale * acc;
  }
}

// One block per (batch, head, key): dk_j += scale * sum_i ds_ij q_i, dv_j += sum_i p_ij dout_i.
__global__ void attention_dkdv_kernel(float* dk, float* dv, const float* dout, const float* q, const float* k,
                                      const float* v, const float* lse, const float* delta, int64_t N, int64_t M,
                                      int64_t H, int64_t d, float scale) {
  extern __shared__ float shared[];
  float* p = shared;       // (N)
  float* ds = shared + N;  // (N)
  const int64_t j = blockIdx.x, h = blockIdx.y, b = blockIdx.z, ld = H * d;
  const float* kj = k + (b * M + j) * ld + h * d;
  const float* vj = v + (b * M + j) * ld + h * d;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
    const float* qi = q + (b * N + i) * ld + h * d;
    const float* doi = dout + (b * N + i) * ld + h * d;
    float s = 0.0f, dp = 0.0f;
    for (int64_t c = 0; c < d; ++c) {
      s += qi[c] * kj[c];
      dp += doi[c] * vj[c];
    }
    const float pij = expf(s * scale - lse[(b * H + h) * N + i]);
    p[i] = pij;
    ds[i] = pij * (dp - delta[(b * H + h) * N + i]);
  }
  __syncthreads();
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    float acc_k = 0.0f, acc_v = 0.0f;
    for (int64_t i = 0; i < N; ++i) {
      acc_k += ds[i] * q[(b * N + i) * ld + h * d + c];
      acc_v += p[i] * dout[(b * N + i) * ld + h * d + c];
    }
    dk[(b * M + j) * ld + h * d + c] += scale * acc_k;
    dv[(b * M + j) * ld + h * d + c] += acc_v;
  }
}

// The row kernels' dynamic shared memory (one row of scores) beside their static 384 bytes of
// reduction scratch, within the default 48 KB.
void check_shared(int64_t floats, const char* what) {
  if (floats * 4 > 48 * 1024 - 1024)
    throw std::runtime_error(std::string(what) + ": sequence too long for this kernel's shared-memory row (" +
                             std::to_string(floats) + " floats)");
}

}  // namespace

void CudaOps::attention_forward(TensorOut o, float* lse, TensorRef q, TensorRef k, TensorRef v, int64_t B, int64_t N,
                                int64_t M, int64_t H, int64_t d, float scale, DType compute) {
  LT_PROFILE("attention_forward");
  const Flash flash = flash_kind(compute, d, {o.data, q.data, k.data, v.data});
  const bool bf16 = compute == DType::bf16;
  if (flash == Flash::mma)
    return bf16 ? flash_mma_forward<__nv_bfloat16>(o, lse, q, k, v, B, N, M, H, scale)
                : flash_mma_forward<__half>(o, lse, q, k, v, B, N, M, H, scale);
  if (flash == Flash::wmma)
    return bf16 ? flash_forward<__nv_bfloat16>(o, lse, q, k, v, B, N, M, H, scale)
                : flash_forward<__half>(o, lse, q, k, v, B, N, M, H, scale);
  check_shared(M, "attention_forward");
  DeviceBuffer wide[3];  // the row kernels read fp32: q, k, v widened when stored narrower
  const float *q32 = converted(wide[0], q, DType::f32, B * N * H * d).f32(),
              *k32 = converted(wide[1], k, DType::f32, B * M * H * d).f32(),
              *v32 = converted(wide[2], v, DType::f32, B * M * H * d).f32();
  dim3 grid(static_cast<unsigned>(N), static_cast<unsigned>(H), static_cast<unsigned>(B));
  attention_forward_kernel<<<grid, kAttnThreads, M * sizeof(float)>>>(o, lse, q32, k32, v32, nullptr, false, N, M, H, d,
                                                                      scale);
  LT_LAUNCHED("attention_forward");
}

void CudaOps::attention_masked_forward(float* o, const float* q, const float* k, const float* v,
                                       const uint8_t* key_mask, bool causal, int64_t B, int64_t N, int64_t M, int64_t H,
                                       int64_t d, float scale) {
  LT_PROFILE("attention_masked_forward");
  check_shared(M, "attention_masked_forward");
  DeviceBuffer mask_buf;  // the mask arrives as a host pointer (ops.h)
  uint8_t* mask = nullptr;
  if (key_mask) {
    mask = static_cast<uint8_t*>(mask_buf.reserve(B * M));
    LT_CUDA(cudaMemcpyAsync(mask, key_mask, static_cast<size_t>(B * M), cudaMemcpyHostToDevice, 0));
  }
  dim3 grid(static_cast<unsigned>(N), static_cast<unsigned>(H), static_cast<unsigned>(B));
  attention_forward_kernel<<<grid, kAttnThreads, M * sizeof(float)>>>(o, nullptr, q, k, v, mask, causal, N, M, H, d,
                                                                      scale);
  LT_LAUNCHED("attention_masked_forward");
}

void CudaOps::attention_backward(float* dq, float* dk, float* dv, const float* dout, TensorRef q, TensorRef k,
                                 TensorRef v, TensorRef o, const float* lse, int64_t B, int64_t N, int64_t M, int64_t H,
                                 int64_t d, float scale, DType compute) {
  LT_PROFILE("attention_backward");
  const Flash flash = flash_kind(compute, d, {dq, dk, dv, dout, q.data, k.data, v.data});
  if (flash != Flash::none) {
    DeviceBuffer delta_buf;
    float* delta = delta_buf.floats(B * H * N);
    attention_delta_kernel<<<blocks_for(B * H * N), kThreads>>>(delta, dout, o, B, N, H, d);
    LT_LAUNCHED("attention delta");
    const bool bf16 = compute == DType::bf16;
    if (flash == Flash::mma)
      return bf16 ? flash_mma_backward<__nv_bfloat16>(dq, dk, dv, dout, q, k, v, lse, delta, B, N, M, H, scale)
                  : flash_mma_backward<__half>(dq, dk, dv, dout, q, k, v, lse, delta, B, N, M, H, scale);
    return bf16 ? flash_backward<__nv_bfloat16>(dq, dk, dv, dout, q, k, v, lse, delta, B, N, M, H, scale)
                : flash_backward<__half>(dq, dk, dv, dout, q, k, v, lse, delta, B, N, M, H, scale);
  }
  check_shared(M, "attention_backward");
  check_shared(2 * N, "attention_backward");
  DeviceBuffer wide[3];  // the row kernels read fp32: q, k, v widened when stored narrower
  const float *q32 = converted(wide[0], q, DType::f32, B * N * H * d).f32(),
              *k32 = converted(wide[1], k, DType::f32, B * M * H * d).f32(),
              *v32 = converted(wide[2], v, DType::f32, B * M * H * d).f32();
  DeviceBuffer delta_buf;
  float* delta = delta_buf.floats(B * H * N);
  attention_delta_kernel<<<blocks_for(B * H * N), kThreads>>>(delta, dout, o, B, N, H, d);
  dim3 qgrid(static_cast<unsigned>(N), static_cast<unsigned>(H), static_cast<unsigned>(B));
  attention_dq_kernel<<<qgrid, kAttnThreads, M * sizeof(float)>>>(dq, dout, q32, k32, v32, lse, delta, N, M, H, d,
                                                                  scale);
  dim3 kgrid(static_cast<unsigned>(M), static_cast<unsigned>(H), static_cast<unsigned>(B));
  attention_dkdv_kernel<<<kgrid, kAttnThreads, 2 * N * sizeof(float)>>>(dk, dv, dout, q32, k32, v32, lse, delta, N, M,
                                                                        H, d, scale);
  LT_LAUNCHED("attention_backward");
}

}  // namespace lt::cuda
