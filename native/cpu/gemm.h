// Blocked, packed fp32 GEMM (BLIS loop order) on the active micro-kernel set. bf16/fp16
// operands are widened to fp32 while packing (or into rows, where A is read in place), so
// every kernel set serves every dtype.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "../dtype.h"

namespace lt::cpu {

struct GemmArgs {
  float* C;     // (M, N), row stride ldc
  TensorRef A;  // op(A) (M, K), row stride lda of A as stored
  TensorRef B;  // op(B) (K, N), row stride ldb of B as stored
  int64_t M, N, K;
  bool transA, transB;
  float alpha, beta;  // C = alpha op(A) op(B) + beta C; C not read when beta == 0
  int64_t lda, ldb, ldc;
  // Then C += bias (N) on every row, and C = SiLU(C) when silu: a convolution's epilogue, run
  // on each register tile's sums before they are stored, rather than in passes over C.
  const float* bias = nullptr;
  bool silu = false;
  // When set, C's final values go here instead, rounded to bf16 (row stride ldc), and C holds
  // only partial sums, if any (K beyond one K block, or beta != 0): a bf16 output written once.
  uint16_t* C16 = nullptr;
};

// Floats starting on a cache line, as the micro-kernels' aligned loads of packed panels need;
// grown on demand (the contents are not kept when it grows).
class PanelBuffer {
 public:
  float* reserve(size_t n);
  float* data() const { return data_.get(); }
  size_t capacity() const { return capacity_; }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> data_;
  size_t capacity_ = 0;
};

// c (rows, cols) of C where a partial register tile lands = alpha * edge + beta * c; edge
// (rows, cols) has row stride ld_edge.
void store_edge(const GemmArgs& g, float* c, const float* edge, int64_t rows, int64_t cols, int64_t ld_edge,
                float beta);
// Splits C over the thread pool (serial when called from inside a pool task).
void gemm(const GemmArgs& g);
// bf16 GEMMs on AMX tiles where the CPU and the OS allow them (LORA_TRAIN_NO_AMX=1 turns
// them off): false, and nothing done, when they do not apply.
bool have_amx();
bool gemm_amx(const GemmArgs& g);
// bf16 GEMMs on AVX512_BF16's pair dot products where the CPU has them and AMX does not take
// the GEMM (LORA_TRAIN_NO_AVX512_BF16=1 turns them off): false, and nothing done, otherwise.
bool have_avx512_bf16();
bool gemm_bf16_dot(const GemmArgs& g);
// Always on the calling thread; for ops that parallelise at a coarser level (attention heads).
void gemm_serial(const GemmArgs& g);

}  // namespace lt::cpu
