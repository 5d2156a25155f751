// The parts of the CPU attention that its fp32 micro-kernel path (attention.cpp) and its bf16
// dot-product path (attention_bf16.cpp) share: blocking, per-thread scratch, a head's rows, the
// online softmax, and the scatter of a head's gradients into interleaved tensors.
#pragma once
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <stdexcept>
#include <vector>

#include "../dtype.h"
#include "gemm.h"
#include "kernels.h"

namespace lt::cpu {

constexpr int64_t kBr = 96;   // query rows per block: a multiple of every kernel set's mr
constexpr int64_t kBc = 128;  // key rows per block: a multiple of every kernel set's nr

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// A thread's scratch, kept across heads and calls: fresh buffers per head cost page faults.
// Pieces start on cache lines, as the micro-kernel's aligned loads of B panels need.
class TaskScratch {
 public:
  // Makes room for pieces of these sizes and starts over.
  void reset(std::initializer_list<int64_t> pieces) {
    int64_t n = 0;
    for (int64_t piece : pieces) n += round_up(piece, kLine);
    data_.reserve(n);
    used_ = 0;
  }
  float* take(int64_t n) {
    float* p = data_.data() + used_;
    used_ += round_up(n, kLine);
    if (used_ > static_cast<int64_t>(data_.capacity()))
      throw std::logic_error("attention scratch: a piece was taken that reset did not size");
    return p;
  }
  static constexpr int64_t kLine = 16;  // floats per cache line

 private:
  PanelBuffer data_;
  int64_t used_ = 0;
};
inline thread_local TaskScratch tls_scratch;

// Rows of one head inside an interleaved (rows, H*d) tensor: fp32 and bf16 are read in place
// (the packers widen bf16 on the way), fp16 is widened into `widened` first.
struct HeadRows {
  TensorRef rows;  // the head's first element, fp32 or bf16
  int64_t ld;
  float at(int64_t i, int64_t c) const { return rows.at(i * ld + c); }
};
inline HeadRows head_rows(TensorRef src, int64_t offset, int64_t rows, int64_t d, int64_t ld, float* widened) {
  if (src.type == DType::f32 || src.type == DType::bf16) return {src.from(offset), ld};
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = 0; c < d; ++c) widened[i * d + c] = src.at(offset + i * ld + c);
  return {widened, d};
}

// Asks for the d floats of a head's row some rows ahead: rows H * d apart defeat the hardware
// prefetcher, and the adds and dot products over them waited on memory.
constexpr int64_t kPrefetchRows = 4;
inline void prefetch_bytes(const void* p, int64_t bytes) {
  for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(static_cast<const char*>(p) + b, 1);
}
inline void prefetch_row(const float* row, int64_t d) { prefetch_bytes(row, d * 4); }

// The next panel's rows, while this one is packed.
inline void prefetch_panel(HeadRows x, int64_t r, int64_t rows, int64_t d, int width) {
  for (int64_t i = r; i < std::min(rows, r + width); ++i)
    prefetch_bytes(x.rows.from(i * x.ld).data, d * dtype_size(x.rows.type));
}

// dst (rows, d) slice of an interleaved tensor += src (rows, ld_src) contiguous.
void scatter_add_head(float* dst, const float* src, int64_t rows, int64_t d, int64_t ld, int64_t ld_src);

// dst (rows, d) slice of an interleaved tensor += src^T, src (d, ld_src) contiguous; block:
// scratch of (kTransposeKeys, d).
constexpr int64_t kTransposeKeys = 16;
void scatter_add_head_transposed(const KernelSet& ks, float* dst, const float* src, int64_t rows, int64_t d, int64_t ld,
                                 int64_t ld_src, float* block);

// A query block's running softmax statistics: each row's max and sum so far.
struct SoftmaxRows {
  std::vector<float> max = std::vector<float>(kBr), sum = std::vector<float>(kBr);
  // Starts a query block: no key seen, and acc (n floats) zero.
  void start(float* acc, int64_t n) {
    std::fill(max.begin(), max.end(), -std::numeric_limits<float>::infinity());
    std::fill(sum.begin(), sum.end(), 0.0f);
    std::fill(acc, acc + n, 0.0f);
  }
};

// One query block's online softmax over the scores s (br, bc), row stride kBc, of key block
// j0: s becomes the block's unnormalised probabilities, the running max and sum of each row
// (stats) are updated, and acc (rows of ld) is rescaled where the max grew. Masked scores count as -inf.
void online_softmax(const KernelSet& ks, float* s, float* acc, int64_t ld, SoftmaxRows& stats, int64_t br, int64_t bc,
                    int64_t i0, int64_t j0, const uint8_t* mask, bool causal);

// Normalises acc's rows (br, ld_acc) by their sums into o's rows from `first` (row stride ld),
// and stores each row's log-sum-exp where lse is not null.
void finish_rows(TensorOut o, int64_t first, int64_t ld, float* lse, float* acc, int64_t ld_acc,
                 const SoftmaxRows& stats, int64_t br, int64_t d);

// delta_i = sum_c dout_ic o_ic = sum_j p_ij dp_ij, the softmax backward's row term: (N). With
// round_dout, dout is rounded through bf16 first, as the products dp_ij read it: the two terms
// of dS = p (dp - delta) then cancel where they should (a single key: exactly).
std::vector<float> row_deltas(HeadRows dout, HeadRows o, int64_t N, int64_t d, bool round_dout);

// Attention computed in bf16 on AVX512_BF16 dot products (attention_bf16.cpp): used where
// attention_bf16_applies (compute bf16, q, k, v stored bf16 or fp32, the CPU able), with the
// arguments of CpuOps' attention ops.
bool attention_bf16_applies(DType compute, TensorRef q, TensorRef k, TensorRef v);
void attention_forward_bf16(TensorOut o, float* lse, TensorRef q, TensorRef k, TensorRef v, int64_t B, int64_t N,
                            int64_t M, int64_t H, int64_t d, float scale);
void attention_backward_bf16(float* dq, float* dk, float* dv, const float* dout, TensorRef q, TensorRef k, TensorRef v,
                             TensorRef o, const float* lse, int64_t B, int64_t N, int64_t M, int64_t H, int64_t d,
                             float scale);

}  // namespace lt::cpu
