// Multi-head attention, heads interleaved in channels. These kernels hold one query's (or one
// key's) row of scores in shared memory: right and simple; the flash-style tiled kernels with
// tensor cores are the next step. o (B, N, H*d), lse (B, H, N); q (B, N, H*d); k, v (B, M, H*d).
#include <cmath>

#include "common.cuh"
#include "cuda_ops.h"

namespace lt::cuda {
namespace {

constexpr int kAttnThreads = 128;

// One block per (batch, head, query). Scores in shared memory (M floats).
__global__ void attention_forward_kernel(float* o, float* lse, const float* q, const float* k, const float* v,
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
    const float p = row_max == -INFINITY ? 0.0f : expf(scores[j] - row_max);
    scores[j] = p;
    local_sum += p;
  }
  const float row_sum = block_sum(local_sum);
  const float inv = row_sum > 0.0f ? 1.0f / row_sum : 0.0f;
  float* oi = o + (b * N + i) * ld + h * d;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j < M; ++j) acc += scores[j] * v[(b * M + j) * ld + h * d + c];
    oi[c] = acc * inv;
  }
  if (lse && threadIdx.x == 0) lse[(b * H + h) * N + i] = row_max + logf(row_sum);
}

// delta (B, H, N) = rowsum(dout * o) per head.
__global__ void attention_delta_kernel(float* delta, const float* dout, const float* o, int64_t B, int64_t N,
                                       int64_t H, int64_t d) {
  LT_FOR(t, B * H * N) {
    const int64_t i = t % N, h = (t / N) % H, b = t / (N * H), ld = H * d;
    float s = 0.0f;
    for (int64_t c = 0; c < d; ++c) s += dout[(b * N + i) * ld + h * d + c] * o[(b * N + i) * ld + h * d + c];
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
  float* p = shared;      // (N)
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

void check_shared(int64_t floats, const char* what) {
  if (floats * 4 > 48 * 1024)
    throw std::runtime_error(std::string(what) + ": sequence too long for this kernel's shared-memory row (" + std::to_string(floats) + " floats)");
}

}  // namespace

void CudaOps::attention_forward(float* o, float* lse, const float* q, const float* k, const float* v, int64_t B,
                                int64_t N, int64_t M, int64_t H, int64_t d, float scale) {
  check_shared(M, "attention_forward");
  dim3 grid(static_cast<unsigned>(N), static_cast<unsigned>(H), static_cast<unsigned>(B));
  attention_forward_kernel<<<grid, kAttnThreads, M * sizeof(float)>>>(o, lse, q, k, v, nullptr, false, N, M, H, d, scale);
  LT_LAUNCHED("attention_forward");
}

void CudaOps::attention_masked_forward(float* o, const float* q, const float* k, const float* v,
                                       const uint8_t* key_mask, bool causal, int64_t B, int64_t N, int64_t M,
                                       int64_t H, int64_t d, float scale) {
  check_shared(M, "attention_masked_forward");
  uint8_t* mask = nullptr;  // the mask arrives as a host pointer (ops.h)
  if (key_mask) {
    LT_CUDA(cudaMalloc(&mask, static_cast<size_t>(B * M)));
    LT_CUDA(cudaMemcpy(mask, key_mask, static_cast<size_t>(B * M), cudaMemcpyHostToDevice));
  }
  dim3 grid(static_cast<unsigned>(N), static_cast<unsigned>(H), static_cast<unsigned>(B));
  attention_forward_kernel<<<grid, kAttnThreads, M * sizeof(float)>>>(o, nullptr, q, k, v, mask, causal, N, M, H, d, scale);
  cudaError_t launched = cudaGetLastError();
  if (mask) cudaFree(mask);
  check(launched, "attention_masked_forward");
}

void CudaOps::attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                                 const float* v, const float* o, const float* lse, int64_t B, int64_t N, int64_t M,
                                 int64_t H, int64_t d, float scale) {
  check_shared(M, "attention_backward");
  check_shared(2 * N, "attention_backward");
  float* delta = nullptr;
  LT_CUDA(cudaMalloc(&delta, static_cast<size_t>(B * H * N) * sizeof(float)));
  attention_delta_kernel<<<blocks_for(B * H * N), kThreads>>>(delta, dout, o, B, N, H, d);
  dim3 qgrid(static_cast<unsigned>(N), static_cast<unsigned>(H), static_cast<unsigned>(B));
  attention_dq_kernel<<<qgrid, kAttnThreads, M * sizeof(float)>>>(dq, dout, q, k, v, lse, delta, N, M, H, d, scale);
  dim3 kgrid(static_cast<unsigned>(M), static_cast<unsigned>(H), static_cast<unsigned>(B));
  attention_dkdv_kernel<<<kgrid, kAttnThreads, 2 * N * sizeof(float)>>>(dk, dv, dout, q, k, v, lse, delta, N, M, H, d, scale);
  cudaError_t launched = cudaGetLastError();
  cudaFree(delta);
  check(launched, "attention_backward");
}

}  // namespace lt::cuda
