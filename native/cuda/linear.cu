// Linear and LoRA linear, forward and backward, as device GEMMs plus bias kernels.
#include "common.cuh"
#include "cuda_ops.h"
#include "gemm.cuh"

namespace lt::cuda {
namespace {

__global__ void fill_bias_kernel(float* y, const float* b, int64_t rows, int64_t out) {
  LT_FOR(i, rows * out) y[i] = b ? b[i % out] : 0.0f;
}

__global__ void column_sums_kernel(float* db, const float* dy, int64_t rows, int64_t out) {
  LT_FOR(j, out) {
    double s = 0.0;
    for (int64_t r = 0; r < rows; ++r) s += dy[r * out + j];
    db[j] += static_cast<float>(s);
  }
}

// A scratch device buffer for one op.
struct Scratch {
  float* p = nullptr;
  explicit Scratch(int64_t n) { LT_CUDA(cudaMalloc(&p, static_cast<size_t>(n > 0 ? n : 1) * sizeof(float))); }
  ~Scratch() { cudaFree(p); }
};

}  // namespace

void CudaOps::linear_forward(float* y, const float* x, const float* W, const float* b, int64_t rows, int64_t in,
                             int64_t out) {
  fill_bias_kernel<<<blocks_for(rows * out), kThreads>>>(y, b, rows, out);
  LT_LAUNCHED("linear bias");
  gemm_device(y, x, W, rows, out, in, false, true, 1.0f, 1.0f, in, in, out);
}

void CudaOps::linear_backward(float* dx, float* dW, float* db, const float* dy, const float* x, const float* W,
                              int64_t rows, int64_t in, int64_t out) {
  if (dx) gemm_device(dx, dy, W, rows, in, out, false, false, 1.0f, 1.0f, out, in, in);
  if (dW) gemm_device(dW, dy, x, out, in, rows, true, false, 1.0f, 1.0f, out, in, in);
  if (db) {
    column_sums_kernel<<<blocks_for(out), kThreads>>>(db, dy, rows, out);
    LT_LAUNCHED("linear bias grad");
  }
}

void CudaOps::lora_linear_forward(float* y, float* xa, const float* x, const float* x_lora, const float* W,
                                  const float* b, const float* A, const float* B, float scale, int64_t rows,
                                  int64_t in, int64_t out, int64_t r) {
  const float* xl = x_lora ? x_lora : x;
  gemm_device(xa, xl, A, rows, r, in, false, true, 1.0f, 0.0f, in, in, r);
  linear_forward(y, x, W, b, rows, in, out);
  gemm_device(y, xa, B, rows, out, r, false, true, scale, 1.0f, r, r, out);
}

void CudaOps::lora_linear_backward(float* dx, float* dx_lora, float* dA, float* dB, float* dW, float* db,
                                   const float* dy, const float* x, const float* x_lora, const float* xa,
                                   const float* W, const float* A, const float* B, float scale, int64_t rows,
                                   int64_t in, int64_t out, int64_t r) {
  const float* xl = x_lora ? x_lora : x;
  float* dxl = dx_lora ? dx_lora : dx;
  gemm_device(dB, dy, xa, out, r, rows, true, false, scale, 1.0f, out, r, r);
  Scratch dxa(rows * r);  // (rows, r)
  gemm_device(dxa.p, dy, B, rows, r, out, false, false, scale, 0.0f, out, r, r);
  gemm_device(dA, dxa.p, xl, r, in, rows, true, false, 1.0f, 1.0f, r, in, in);
  linear_backward(dx, dW, db, dy, x, W, rows, in, out);
  if (dxl) gemm_device(dxl, dxa.p, A, rows, in, r, false, false, 1.0f, 1.0f, r, in, in);
}

}  // namespace lt::cuda
