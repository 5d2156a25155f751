// Model glue on the device: modulation, dropout (the CPU backend's counter-based masks),
// sequence concatenation, transposes, the prior's output head, embeddings, channel statistics.
#include "../rng.h"
#include "common.cuh"
#include "cuda_ops.h"
#include "profile.h"

namespace lt::cuda {
namespace {

__global__ void modulate_kernel(float* y, const float* x, const float* ab, int64_t B, int64_t P, int64_t C) {
  LT_FOR(i, B * P * C) {
    const int64_t c = i % C, b = i / (P * C);
    y[i] = x[i] * (1.0f + ab[b * 2 * C + c]) + ab[b * 2 * C + C + c];
  }
}

__global__ void modulate_dx_kernel(float* dx, const float* dy, const float* ab, int64_t B, int64_t P, int64_t C) {
  LT_FOR(i, B * P * C) dx[i] += dy[i] * (1.0f + ab[(i / (P * C)) * 2 * C + i % C]);
}

__global__ void modulate_dab_kernel(float* dab, const float* dy, const float* x, int64_t B, int64_t P, int64_t C) {
  LT_FOR(t, B * C) {
    const int64_t b = t / C, c = t % C;
    double da = 0.0, db = 0.0;
    for (int64_t p = 0; p < P; ++p) {
      const float g = dy[(b * P + p) * C + c];
      da += (double)g * x[(b * P + p) * C + c];
      db += g;
    }
    dab[b * 2 * C + c] += static_cast<float>(da);
    dab[b * 2 * C + C + c] += static_cast<float>(db);
  }
}

__global__ void dropout_kernel(float* y, const float* x, float p, float scale, uint32_t a, uint32_t b, int64_t n,
                               bool accumulate) {
  LT_FOR(i, n) {
    const float v = uniform01(a, b, static_cast<uint32_t>(i)) >= p ? x[i] * scale : 0.0f;
    y[i] = accumulate ? y[i] + v : v;
  }
}

__global__ void dropout_typed_kernel(TensorOut y, TensorRef x, float p, float scale, uint32_t a, uint32_t b,
                                     int64_t n) {
  LT_FOR(i, n) y.set(i, uniform01(a, b, static_cast<uint32_t>(i)) >= p ? x.at(i) * scale : 0.0f);
}

__global__ void dropout_add_kernel(float* out, const float* y, const float* residual, float p, float scale, uint32_t a,
                                   uint32_t b, int64_t n) {
  LT_FOR(i, n) out[i] = residual[i] + (uniform01(a, b, static_cast<uint32_t>(i)) >= p ? y[i] * scale : 0.0f);
}

__global__ void concat_kernel(TensorOut out, TensorRef a, TensorRef b, int64_t B, int64_t Na, int64_t Nb, int64_t C) {
  LT_FOR(i, B * (Na + Nb) * C) {
    const int64_t c = i % C, n = (i / C) % (Na + Nb), bi = i / (C * (Na + Nb));
    out.set(i, n < Na ? a.at((bi * Na + n) * C + c) : b.at((bi * Nb + n - Na) * C + c));
  }
}

__global__ void split_kernel(float* da, float* db, const float* dout, int64_t B, int64_t Na, int64_t Nb, int64_t C) {
  LT_FOR(i, B * (Na + Nb) * C) {
    const int64_t c = i % C, n = (i / C) % (Na + Nb), bi = i / (C * (Na + Nb));
    if (n < Na) {
      if (da) da[(bi * Na + n) * C + c] += dout[i];
    } else if (db) {
      db[(bi * Nb + n - Na) * C + c] += dout[i];
    }
  }
}

__global__ void transpose_kernel(float* out, const float* x, int64_t B, int64_t C, int64_t P) {
  LT_FOR(i, B * P * C) {  // out (B, P, C) from x (B, C, P)
    const int64_t c = i % C, p = (i / C) % P, b = i / (C * P);
    out[i] = x[(b * C + c) * P + p];
  }
}

__global__ void prior_output_kernel(float* out, const float* x_in, const float* ab, int64_t B, int64_t Cin, int64_t P) {
  LT_FOR(i, B * Cin * P) {
    const int64_t p = i % P, c = (i / P) % Cin, b = i / (P * Cin);
    const float* abr = ab + (b * P + p) * 2 * Cin;
    out[i] = (x_in[i] - abr[c]) / (fabsf(1.0f - abr[Cin + c]) + 1e-5f);
  }
}

__global__ void prior_output_backward_kernel(float* dab, const float* dout, const float* x_in, const float* ab,
                                             int64_t B, int64_t Cin, int64_t P) {
  LT_FOR(i, B * Cin * P) {  // each (b, c, p) owns its two entries of dab: no races
    const int64_t p = i % P, c = (i / P) % Cin, b = i / (P * Cin);
    const float* abr = ab + (b * P + p) * 2 * Cin;
    float* dabr = dab + (b * P + p) * 2 * Cin;
    const float one_minus_b = 1.0f - abr[Cin + c];
    const float den = fabsf(one_minus_b) + 1e-5f;
    const float sign = one_minus_b > 0.0f ? 1.0f : (one_minus_b < 0.0f ? -1.0f : 0.0f);
    dabr[c] += -dout[i] / den;
    dabr[Cin + c] += dout[i] * (x_in[i] - abr[c]) * sign / (den * den);
  }
}

__global__ void embedding_kernel(float* out, const float* table, const int32_t* ids, int64_t n, int64_t dim) {
  LT_FOR(i, n * dim) out[i] = table[static_cast<int64_t>(ids[i / dim]) * dim + i % dim];
}

__global__ void channel_mean_kernel(float* out, const float* x, int64_t B, int64_t P, int64_t C) {
  LT_FOR(t, B * C) {
    const int64_t b = t / C, c = t % C;
    double s = 0.0;
    for (int64_t p = 0; p < P; ++p) s += x[(b * P + p) * C + c];
    out[t] = static_cast<float>(s / static_cast<double>(P));
  }
}

__global__ void scale_channels_kernel(float* y, const float* x, const float* s, int64_t B, int64_t P, int64_t C) {
  LT_FOR(i, B * P * C) y[i] = x[i] * s[(i / (P * C)) * C + i % C];
}

}  // namespace

void CudaOps::modulate_forward(float* y, const float* x, const float* ab, int64_t B, int64_t P, int64_t C) {
  LT_PROFILE("modulate_forward");
  modulate_kernel<<<blocks_for(B * P * C), kThreads>>>(y, x, ab, B, P, C);
  LT_LAUNCHED("modulate");
}

void CudaOps::modulate_backward(float* dx, float* dab, const float* dy, const float* x, const float* ab, int64_t B,
                                int64_t P, int64_t C) {
  LT_PROFILE("modulate_backward");
  if (dx) modulate_dx_kernel<<<blocks_for(B * P * C), kThreads>>>(dx, dy, ab, B, P, C);
  if (dab) modulate_dab_kernel<<<blocks_for(B * C), kThreads>>>(dab, dy, x, B, P, C);
  LT_LAUNCHED("modulate backward");
}

void CudaOps::dropout_forward(TensorOut y, TensorRef x, float p, uint64_t seed, int64_t n) {
  LT_PROFILE("dropout_forward");
  const DropoutKey key = DropoutKey::from_seed(seed);
  if (x.type != DType::f32 || y.type != DType::f32)
    dropout_typed_kernel<<<blocks_for(n), kThreads>>>(y, x, p, 1.0f / (1.0f - p), key.a, key.b, n);
  else
    dropout_kernel<<<blocks_for(n), kThreads>>>(y.f32(), x.f32(), p, 1.0f / (1.0f - p), key.a, key.b, n, false);
  LT_LAUNCHED("dropout");
}

void CudaOps::dropout_add_forward(float* out, const float* y, const float* residual, float p, uint64_t seed,
                                  int64_t n) {
  LT_PROFILE("dropout_add_forward");
  const DropoutKey key = DropoutKey::from_seed(seed);
  dropout_add_kernel<<<blocks_for(n), kThreads>>>(out, y, residual, p, 1.0f / (1.0f - p), key.a, key.b, n);
  LT_LAUNCHED("dropout_add");
}

void CudaOps::dropout_backward(float* dx, const float* dy, float p, uint64_t seed, int64_t n) {
  LT_PROFILE("dropout_backward");
  const DropoutKey key = DropoutKey::from_seed(seed);
  dropout_kernel<<<blocks_for(n), kThreads>>>(dx, dy, p, 1.0f / (1.0f - p), key.a, key.b, n, true);
  LT_LAUNCHED("dropout backward");
}

void CudaOps::concat_seq(TensorOut out, TensorRef a, TensorRef b, int64_t B, int64_t Na, int64_t Nb, int64_t C) {
  LT_PROFILE("concat_seq");
  concat_kernel<<<blocks_for(B * (Na + Nb) * C), kThreads>>>(out, a, b, B, Na, Nb, C);
  LT_LAUNCHED("concat_seq");
}

void CudaOps::split_seq_backward(float* da, float* db, const float* dout, int64_t B, int64_t Na, int64_t Nb,
                                 int64_t C) {
  LT_PROFILE("split_seq_backward");
  split_kernel<<<blocks_for(B * (Na + Nb) * C), kThreads>>>(da, db, dout, B, Na, Nb, C);
  LT_LAUNCHED("split_seq_backward");
}

void CudaOps::transpose_cp(float* out, const float* x, int64_t B, int64_t C, int64_t P) {
  LT_PROFILE("transpose_cp");
  transpose_kernel<<<blocks_for(B * C * P), kThreads>>>(out, x, B, C, P);
  LT_LAUNCHED("transpose");
}

void CudaOps::prior_output_forward(float* out, const float* x_in, const float* ab, int64_t B, int64_t Cin, int64_t P) {
  LT_PROFILE("prior_output_forward");
  prior_output_kernel<<<blocks_for(B * Cin * P), kThreads>>>(out, x_in, ab, B, Cin, P);
  LT_LAUNCHED("prior output");
}

void CudaOps::prior_output_backward(float* dab, const float* dout, const float* x_in, const float* ab, int64_t B,
                                    int64_t Cin, int64_t P) {
  LT_PROFILE("prior_output_backward");
  prior_output_backward_kernel<<<blocks_for(B * Cin * P), kThreads>>>(dab, dout, x_in, ab, B, Cin, P);
  LT_LAUNCHED("prior output backward");
}

void CudaOps::embedding_forward(float* out, const float* table, const int32_t* ids, int64_t n, int64_t dim) {
  LT_PROFILE("embedding_forward");
  int32_t* device_ids = nullptr;  // ids arrive as a host pointer (ops.h)
  LT_CUDA(cudaMalloc(&device_ids, static_cast<size_t>(n) * sizeof(int32_t)));
  cudaError_t copied = cudaMemcpy(device_ids, ids, static_cast<size_t>(n) * sizeof(int32_t), cudaMemcpyHostToDevice);
  if (copied == cudaSuccess) embedding_kernel<<<blocks_for(n * dim), kThreads>>>(out, table, device_ids, n, dim);
  cudaError_t launched = cudaGetLastError();
  cudaFree(device_ids);
  check(copied, "embedding ids");
  check(launched, "embedding");
}

void CudaOps::channel_mean(float* out, const float* x, int64_t B, int64_t P, int64_t C) {
  LT_PROFILE("channel_mean");
  channel_mean_kernel<<<blocks_for(B * C), kThreads>>>(out, x, B, P, C);
  LT_LAUNCHED("channel_mean");
}

void CudaOps::scale_channels(float* y, const float* x, const float* s, int64_t B, int64_t P, int64_t C) {
  LT_PROFILE("scale_channels");
  scale_channels_kernel<<<blocks_for(B * P * C), kThreads>>>(y, x, s, B, P, C);
  LT_LAUNCHED("scale_channels");
}

}  // namespace lt::cuda
