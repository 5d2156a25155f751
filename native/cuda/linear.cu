// Linear and LoRA linear, forward and backward, as cuBLASLt GEMMs (bias in the GEMM's
// epilogue) plus small kernels. The base and low-rank paths are one GEMM each way where they
// can be, so the output is written once:
// - bf16/fp16 weights: the operands are concatenated along K, y = [x | s xa] [W | B]^T and
//   dx += [dy | s dy B] [W ; A], in the temporary low-precision copies the GEMMs need anyway
//   (x may already be bf16/fp16; dy is fp32). The low-rank terms are rounded like every other
//   operand. LoRA dropout only changes xa, so the forward concatenates under it too.
// - fp32 weights multiplied in fp32, no LoRA dropout: the adapter is folded into a temporary
//   weight, W' = W + s B A. Not for low precision or TF32: rounding W' to the weight's precision
//   would drop every change smaller than half its last place, i.e. a young adapter's effect.
// Otherwise (few rows, TF32, LoRA dropout's backward) the low-rank path is a second GEMM
// (beta = 1), as in peft, summed in fp32.
#include "common.cuh"
#include "cuda_ops.h"
#include "profile.h"

namespace lt::cuda {
namespace {

__global__ void column_sums_kernel(float* db, const float* dy, int64_t rows, int64_t out) {
  LT_FOR(j, out) {
    double s = 0.0;
    for (int64_t r = 0; r < rows; ++r) s += dy[r * out + j];
    db[j] += static_cast<float>(s);
  }
}

// merged (out, in) = W + scale B A; B (out, r), A (r, in), r small.
__global__ void merge_lora_kernel(float* merged, const float* W, const float* A, const float* B, float scale,
                                  int64_t out, int64_t in, int64_t r) {
  LT_FOR(i, out * in) {
    const int64_t o = i / in, c = i % in;
    float acc = 0.0f;
    for (int64_t k = 0; k < r; ++k) acc += B[o * r + k] * A[k * in + c];
    merged[i] = W[i] + scale * acc;
  }
}

// W' = W + scale B A into buf.
const float* merge_lora(DeviceBuffer& buf, const float* W, const float* A, const float* B, float scale, int64_t out,
                        int64_t in, int64_t r) {
  float* p = buf.floats(out * in);
  merge_lora_kernel<<<blocks_for(out * in), kThreads>>>(p, W, A, B, scale, out, in, r);
  LT_LAUNCHED("merge LoRA");
  return p;
}

// dst[:, col0 : col0 + cols_pad] of a low-precision (rows, ld_dst) matrix = scale * src (rows,
// cols) at row stride ld_src, rounded to t; columns cols..cols_pad are zero. blockIdx.x is the
// row, blockIdx.y a tile of columns: no thread divides a 64-bit index.
__global__ void pack_kernel(TensorOut dst, int64_t ld_dst, int64_t col0, TensorRef src, int64_t ld_src, int64_t cols,
                            int64_t cols_pad, float scale) {
  const int64_t c = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x, row = blockIdx.x;
  if (c < cols_pad) dst.set(row * ld_dst + col0 + c, c < cols ? scale * src.at(row * ld_src + c) : 0.0f);
}

void pack(uint16_t* dst, DType t, int64_t ld_dst, int64_t col0, TensorRef src, int64_t ld_src, int64_t rows,
          int64_t cols, int64_t cols_pad, float scale = 1.0f) {
  if (rows <= 0 || cols_pad <= 0) return;
  pack_kernel<<<row_column_grid(1, rows, cols_pad), column_threads(cols_pad)>>>(TensorOut(dst, t), ld_dst, col0, src,
                                                                                ld_src, cols, cols_pad, scale);
  LT_LAUNCHED("LoRA operand pack");
}

// The low-rank width padded so concatenated rows stay 16-byte aligned for the tensor cores.
int64_t padded_rank(int64_t r) { return (r + 7) / 8 * 8; }

}  // namespace

// Concatenating re-packs the whole weight (about 4 bytes an element, read and written); it
// pays when that is less than the separate path's second pass over the output (8 bytes an
// element of (rows, out_dim)): 2 rows > in_dim. The mapper's B rows and the text tokens' few
// hundred are not worth it.
CudaOps::LoraPath CudaOps::lora_path(TensorRef W, bool dropout, int64_t rows, int64_t in_dim, int64_t in,
                                     int64_t out) const {
  if (dropout) return LoraPath::separate;
  if (W.type != DType::f32)
    return in % 8 == 0 && out % 8 == 0 && 2 * rows > in_dim ? LoraPath::concatenated : LoraPath::separate;
  return allow_tf32_ ? LoraPath::separate : LoraPath::merged;
}

void CudaOps::linear_forward(TensorOut y, TensorRef x, TensorRef W, const float* b, int64_t rows, int64_t in,
                             int64_t out) {
  LT_PROFILE("linear_forward");
  gemm_device(y, x, W, rows, out, in, false, true, 1.0f, 0.0f, in, in, out, allow_tf32_, b);  // y = x W^T + b
}

void CudaOps::linear_backward(float* dx, float* dW, float* db, const float* dy, TensorRef x, TensorRef W, int64_t rows,
                              int64_t in, int64_t out, bool accumulate_dx) {
  LT_PROFILE("linear_backward");
  if (dx) gemm(dx, dy, W, rows, in, out, false, false, 1.0f, accumulate_dx ? 1.0f : 0.0f, out, in, in);  // dx (+)= dy W
  if (dW) gemm(dW, dy, x, out, in, rows, true, false, 1.0f, 1.0f, out, in, in);                          // dW += dy^T x
  if (db) {
    column_sums_kernel<<<blocks_for(out), kThreads>>>(db, dy, rows, out);
    LT_LAUNCHED("linear bias grad");
  }
}

void CudaOps::lora_linear_forward(TensorOut y, float* xa, TensorRef x, TensorRef x_lora, TensorRef W, const float* b,
                                  const float* A, const float* B, float scale, int64_t rows, int64_t in, int64_t out,
                                  int64_t r) {
  LT_PROFILE("lora_linear_forward");
  gemm(xa, x_lora.data ? x_lora : x, A, rows, r, in, false, true, 1.0f, 0.0f, in, in, r);  // xa = x_lora A^T
  // LoRA dropout only changes xa, so the forward may still concatenate (or fold in fp32).
  switch (lora_path(W, x_lora.data != nullptr && W.type == DType::f32, rows, in, in, out)) {
    case LoraPath::separate: {
      // A bf16/fp16 y is summed in fp32 and rounded once (rounding the base part first would
      // swallow a young adapter's small contribution).
      DeviceBuffer y_wide;
      float* y32 = y.type == DType::f32 ? y.f32() : y_wide.floats(rows * out);
      linear_forward(y32, x, W, b, rows, in, out);
      gemm_device(y32, xa, B, rows, out, r, false, true, scale, 1.0f, r, r, out, allow_tf32_);  // y += s xa B^T
      if (y32 != y.data) convert_device(y.data, y.type, y32, rows * out);
      return;
    }
    case LoraPath::merged: {
      DeviceBuffer merged;
      linear_forward(y, x, merge_lora(merged, W.f32(), A, B, scale, out, in, r), b, rows, in, out);
      return;
    }
    case LoraPath::concatenated: {
      const DType t = W.type;
      const int64_t K = in + padded_rank(r);
      DeviceBuffer xc_buf, wc_buf;
      auto* xc = static_cast<uint16_t*>(xc_buf.reserve(rows * K * 2));  // (rows, K) = [x | s xa | 0]
      auto* wc = static_cast<uint16_t*>(wc_buf.reserve(out * K * 2));   // (out, K) = [W | B | 0]
      pack(xc, t, K, 0, x, in, rows, in, in);
      pack(xc, t, K, in, xa, r, rows, r, K - in, scale);
      pack(wc, t, K, 0, W, in, out, in, in);
      pack(wc, t, K, in, B, r, out, r, K - in);
      gemm_device(y, {xc, t}, {wc, t}, rows, out, K, false, true, 1.0f, 0.0f, K, K, out, allow_tf32_, b);
      return;
    }
  }
}

void CudaOps::lora_linear_backward(float* dx, float* dx_lora, float* dA, float* dB, float* dW, float* db,
                                   const float* dy, TensorRef x, const float* x_lora, const float* xa, TensorRef W,
                                   const float* A, const float* B, float scale, int64_t rows, int64_t in, int64_t out,
                                   int64_t r, bool accumulate_dx) {
  LT_PROFILE("lora_linear_backward");
  const float beta = accumulate_dx ? 1.0f : 0.0f;
  gemm(dB, dy, xa, out, r, rows, true, false, scale, 1.0f, out, r, r);  // dB += s dy^T xa
  DeviceBuffer dxa_buf;
  float* dxa = dxa_buf.floats(rows * r);                                                           // (rows, r)
  gemm(dxa, dy, B, rows, r, out, false, false, scale, 0.0f, out, r, r);                            // s dy B
  gemm(dA, dxa, x_lora ? TensorRef(x_lora) : x, r, in, rows, true, false, 1.0f, 1.0f, r, in, in);  // dA += dxa^T x_lora
  const LoraPath path =
      dx ? lora_path(W, x_lora != nullptr || dx_lora != nullptr, rows, out, in, out) : LoraPath::separate;
  if (path == LoraPath::merged) {  // both paths' input gradients in one GEMM through W' = W + s B A
    DeviceBuffer merged;
    linear_backward(dx, dW, db, dy, x, merge_lora(merged, W.f32(), A, B, scale, out, in, r), rows, in, out,
                    accumulate_dx);
    return;
  }
  if (path == LoraPath::concatenated) {  // dx += [dy | s dy B | 0] [W ; A ; 0]
    const DType t = W.type;
    const int64_t K = out + padded_rank(r);
    DeviceBuffer dc_buf, wt_buf;
    auto* dc = static_cast<uint16_t*>(dc_buf.reserve(rows * K * 2));  // (rows, K)
    auto* wt = static_cast<uint16_t*>(wt_buf.reserve(K * in * 2));    // (K, in)
    pack(dc, t, K, 0, dy, out, rows, out, out);
    pack(dc, t, K, out, dxa, r, rows, r, K - out);
    pack(wt, t, in, 0, W, in, out, in, in);
    pack(wt + out * in, t, in, 0, A, in, r, in, in);
    LT_CUDA(cudaMemsetAsync(wt + (out + r) * in, 0, (K - out - r) * in * 2, 0));
    gemm_device(dx, {dc, t}, {wt, t}, rows, in, K, false, false, 1.0f, beta, K, in, in, allow_tf32_);
    linear_backward(nullptr, dW, db, dy, x, W, rows, in, out, true);
    return;
  }
  linear_backward(dx, dW, db, dy, x, W, rows, in, out, accumulate_dx);
  float* dxl = dx_lora ? dx_lora : dx;
  // dx already holds the base path's part; a separate dx_lora is written afresh.
  if (dxl) gemm(dxl, dxa, A, rows, in, r, false, false, 1.0f, dxl == dx ? 1.0f : 0.0f, r, in, in);  // (+)= dxa A
}

}  // namespace lt::cuda
