// Linear and LoRA linear, forward and backward, as GEMMs on the pooled kernel.
#include <vector>

#include "cpu_ops.h"
#include "gemm.h"
#include "profile.h"

namespace lt::cpu {

namespace {

// db (out) += column sums of dy (rows, out), summed in double for long batches.
void add_column_sums(float* db, const float* dy, int64_t rows, int64_t out) {
  std::vector<double> acc(out, 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < out; ++j) acc[j] += dy[r * out + j];
  for (int64_t j = 0; j < out; ++j) db[j] += static_cast<float>(acc[j]);
}

// A bf16/fp16 output: computed in fp32 by compute(y32), then rounded once.
template <typename Compute>
void write_rounded(Ops& ops, TensorOut y, int64_t n, Compute compute) {
  Scratch scratch(ops);
  float* y32 = scratch.alloc(n);  // (n)
  compute(y32);
  ops.convert(y.data, y.type, y32, n);
}

uint16_t* bf16_out(TensorOut y) { return static_cast<uint16_t*>(y.data); }

}  // namespace

void CpuOps::linear_forward(TensorOut y, TensorRef x, TensorRef W, const float* b, int64_t rows, int64_t in,
                            int64_t out) {
  LT_CPU_PROFILE("linear_forward", {rows, in, out});
  if (y.type == DType::bf16) {
    // The tiles write y in bf16; the fp32 scratch takes only partial sums over a long K (it is
    // mapped, not touched, otherwise).
    Scratch scratch(*this);
    float* y32 = scratch.alloc(rows * out);  // (rows, out)
    cpu::gemm({y32, x, W, rows, out, in, false, true, 1.0f, 0.0f, in, in, out, b, false, bf16_out(y)});
    return;
  }
  if (y.type != DType::f32)
    return write_rounded(*this, y, rows * out, [&](float* y32) { linear_forward(y32, x, W, b, rows, in, out); });
  cpu::gemm({y.f32(), x, W, rows, out, in, false, true, 1.0f, 0.0f, in, in, out, b});  // y = x W^T + b
}

void CpuOps::linear_backward(float* dx, float* dW, float* db, const float* dy, TensorRef x, TensorRef W, int64_t rows,
                             int64_t in, int64_t out, bool accumulate_dx) {
  LT_CPU_PROFILE("linear_backward", {rows, in, out});
  if (dx)
    cpu::gemm(
        {dx, dy, W, rows, in, out, false, false, 1.0f, accumulate_dx ? 1.0f : 0.0f, out, in, in});  // dx (+)= dy W
  if (dW) cpu::gemm({dW, dy, x, out, in, rows, true, false, 1.0f, 1.0f, out, in, in});              // dW += dy^T x
  if (db) add_column_sums(db, dy, rows, out);
}

void CpuOps::lora_linear_forward(TensorOut y, float* xa, TensorRef x, TensorRef x_lora, TensorRef W, const float* b,
                                 const float* A, const float* B, float scale, int64_t rows, int64_t in, int64_t out,
                                 int64_t r) {
  LT_CPU_PROFILE("lora_linear_forward", {rows, in, out});
  if (y.type != DType::f32 && y.type != DType::bf16)
    return write_rounded(*this, y, rows * out, [&](float* y32) {
      lora_linear_forward(y32, xa, x, x_lora, W, b, A, B, scale, rows, in, out, r);
    });
  // A bf16 y is summed in fp32 scratch and written once, by the last GEMM's tiles.
  Scratch scratch(*this);
  float* y32 = y.type == DType::bf16 ? scratch.alloc(rows * out) : y.f32();  // (rows, out)
  const TensorRef xl = x_lora.data ? x_lora : x;
  cpu::gemm({xa, xl, A, rows, r, in, false, true, 1.0f, 0.0f, in, in, r});  // xa = x_lora A^T
  linear_forward(y32, x, W, b, rows, in, out);
  cpu::gemm({y32, xa, B, rows, out, r, false, true, scale, 1.0f, r, r, out, nullptr, false,
             y.type == DType::bf16 ? bf16_out(y) : nullptr});  // y += s xa B^T
}

void CpuOps::lora_linear_backward(float* dx, float* dx_lora, float* dA, float* dB, float* dW, float* db,
                                  const float* dy, TensorRef x, const float* x_lora, const float* xa, TensorRef W,
                                  const float* A, const float* B, float scale, int64_t rows, int64_t in, int64_t out,
                                  int64_t r, bool accumulate_dx) {
  LT_CPU_PROFILE("lora_linear_backward", {rows, in, out});
  const TensorRef xl = x_lora ? TensorRef(x_lora) : x;
  float* dxl = dx_lora ? dx_lora : dx;
  // dB += s dy^T xa, computed transposed: with r rows of output the GEMM packs only xa and
  // copies dy's rows as they lie (as dy^T, the A operand, dy was gathered for r of 16 lanes).
  std::vector<float> dB_t(static_cast<size_t>(r * out));                                  // (r, out)
  cpu::gemm({dB_t.data(), xa, dy, r, out, rows, true, false, scale, 0.0f, r, out, out});  // s xa^T dy
  for (int64_t o = 0; o < out; ++o)
    for (int64_t j = 0; j < r; ++j) dB[o * r + j] += dB_t[j * out + o];
  std::vector<float> dxa(static_cast<size_t>(rows * r));                               // (rows, r)
  cpu::gemm({dxa.data(), dy, B, rows, r, out, false, false, scale, 0.0f, out, r, r});  // s dy B
  cpu::gemm({dA, dxa.data(), xl, r, in, rows, true, false, 1.0f, 1.0f, r, in, in});    // dA += dxa^T x_lora
  linear_backward(dx, dW, db, dy, x, W, rows, in, out, accumulate_dx);
  // dx already holds the base path's part; a separate dx_lora is written afresh.
  const float beta = dxl == dx ? 1.0f : 0.0f;
  if (dxl) cpu::gemm({dxl, dxa.data(), A, rows, in, r, false, false, 1.0f, beta, r, in, in});  // (+)= dxa A
}

}  // namespace lt::cpu
