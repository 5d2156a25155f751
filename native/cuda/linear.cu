// Linear and LoRA linear, forward and backward, as cuBLASLt GEMMs (bias in the GEMM's
// epilogue) plus small kernels. For an fp32 weight multiplied in fp32 and no LoRA dropout, the
// adapter is folded into a temporary copy of the weight, W' = W + s B A, so the base and
// low-rank paths are one GEMM each way and the output is written once. Not for bf16/fp16 or
// TF32: rounding W' to the weight's precision would drop every change smaller than half its
// last place, i.e. most of a young adapter's effect; those add the low-rank path with a second
// GEMM (beta = 1), as peft does.
#include "common.cuh"
#include "cuda_ops.h"

namespace lt::cuda {
namespace {

__global__ void column_sums_kernel(float* db, const float* dy, int64_t rows, int64_t out) {
  LT_FOR(j, out) {
    double s = 0.0;
    for (int64_t r = 0; r < rows; ++r) s += dy[r * out + j];
    db[j] += static_cast<float>(s);
  }
}

// merged (out, in) = W + scale B A in W's storage type; B (out, r), A (r, in), r small.
template <typename T>
__global__ void merge_lora_kernel(T* merged, const T* W, DType type, const float* A, const float* B, float scale,
                                  int64_t out, int64_t in, int64_t r) {
  LT_FOR(i, out * in) {
    const int64_t o = i / in, c = i % in;
    float acc = 0.0f;
    for (int64_t k = 0; k < r; ++k) acc += B[o * r + k] * A[k * in + c];
    if constexpr (sizeof(T) == 4) merged[i] = W[i] + scale * acc;
    else merged[i] = f32_to_lowp(lowp_to_f32(W[i], type) + scale * acc, type);
  }
}

// W' = W + scale B A into buf; returns it typed as W.
TensorRef merge_lora(DeviceBuffer& buf, TensorRef W, const float* A, const float* B, float scale, int64_t out,
                     int64_t in, int64_t r) {
  void* p = buf.reserve(out * in * dtype_size(W.type));
  if (W.type == DType::f32)
    merge_lora_kernel<<<blocks_for(out * in), kThreads>>>(static_cast<float*>(p), W.f32(), W.type, A, B, scale, out, in, r);
  else
    merge_lora_kernel<<<blocks_for(out * in), kThreads>>>(static_cast<uint16_t*>(p), W.lowp(), W.type, A, B, scale, out, in, r);
  LT_LAUNCHED("merge LoRA");
  return {p, W.type};
}

}  // namespace

bool CudaOps::merges_lora(TensorRef W) const { return W.type == DType::f32 && !allow_tf32_; }

void CudaOps::linear_forward(float* y, const float* x, TensorRef W, const float* b, int64_t rows, int64_t in,
                             int64_t out) {
  gemm_device(y, x, W, rows, out, in, false, true, 1.0f, 0.0f, in, in, out, allow_tf32_, b);  // y = x W^T + b
}

void CudaOps::linear_backward(float* dx, float* dW, float* db, const float* dy, const float* x, TensorRef W,
                              int64_t rows, int64_t in, int64_t out) {
  if (dx) gemm(dx, dy, W, rows, in, out, false, false, 1.0f, 1.0f, out, in, in);  // dx += dy W
  if (dW) gemm(dW, dy, x, out, in, rows, true, false, 1.0f, 1.0f, out, in, in);   // dW += dy^T x
  if (db) {
    column_sums_kernel<<<blocks_for(out), kThreads>>>(db, dy, rows, out);
    LT_LAUNCHED("linear bias grad");
  }
}

void CudaOps::lora_linear_forward(float* y, float* xa, const float* x, const float* x_lora, TensorRef W,
                                  const float* b, const float* A, const float* B, float scale, int64_t rows,
                                  int64_t in, int64_t out, int64_t r) {
  gemm(xa, x_lora ? x_lora : x, A, rows, r, in, false, true, 1.0f, 0.0f, in, in, r);  // xa = x_lora A^T
  if (x_lora || !merges_lora(W)) {
    linear_forward(y, x, W, b, rows, in, out);
    gemm(y, xa, B, rows, out, r, false, true, scale, 1.0f, r, r, out);  // y += s xa B^T
    return;
  }
  DeviceBuffer merged;
  linear_forward(y, x, merge_lora(merged, W, A, B, scale, out, in, r), b, rows, in, out);
}

void CudaOps::lora_linear_backward(float* dx, float* dx_lora, float* dA, float* dB, float* dW, float* db,
                                   const float* dy, const float* x, const float* x_lora, const float* xa,
                                   TensorRef W, const float* A, const float* B, float scale, int64_t rows,
                                   int64_t in, int64_t out, int64_t r) {
  gemm(dB, dy, xa, out, r, rows, true, false, scale, 1.0f, out, r, r);  // dB += s dy^T xa
  DeviceBuffer dxa_buf;
  float* dxa = dxa_buf.floats(rows * r);                                 // (rows, r)
  gemm(dxa, dy, B, rows, r, out, false, false, scale, 0.0f, out, r, r);  // s dy B
  gemm(dA, dxa, x_lora ? x_lora : x, r, in, rows, true, false, 1.0f, 1.0f, r, in, in);  // dA += dxa^T x_lora
  if (dx && !dx_lora && merges_lora(W)) {  // both paths' input gradients in one GEMM through W' = W + s B A
    DeviceBuffer merged;
    linear_backward(dx, dW, db, dy, x, merge_lora(merged, W, A, B, scale, out, in, r), rows, in, out);
    return;
  }
  linear_backward(dx, dW, db, dy, x, W, rows, in, out);
  float* dxl = dx_lora ? dx_lora : dx;
  if (dxl) gemm(dxl, dxa, A, rows, in, r, false, false, 1.0f, 1.0f, r, in, in);  // += dxa A
}

}  // namespace lt::cuda
