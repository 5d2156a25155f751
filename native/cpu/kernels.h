// CPU micro-kernels, one set per instruction set, picked at run time from cpuid.
// LORA_TRAIN_CPU_KERNEL=avx512|avx2|generic (or set_cpu_kernel) forces a set, so tests can
// check every path on one machine.
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "../dtype.h"

namespace lt::cpu {

// Where a register tile's sums go: rows x cols of C (row stride ldc), rows <= mr and cols <= nr,
// = alpha * sums + beta * C (C not read when beta == 0), then + bias (cols values, when set),
// then SiLU when silu. The epilogue runs on the sums in registers, so a partial tile needs no
// buffer and a convolution's bias and activation no pass over C. With c16 the results go there
// instead, rounded to bf16 as f32_to_bf16 rounds (same row stride; c is then only read): a
// bf16 output written once rather than in fp32 and converted in a pass of its own.
struct TileOut {
  float* c;
  int64_t ldc;
  int rows, cols;
  float alpha, beta;
  const float* bias = nullptr;
  bool silu = false;
  uint16_t* c16 = nullptr;
};

struct KernelSet {
  const char* name;
  int mr, nr;      // register tile of the GEMM micro-kernel
  int mc, kc, nc;  // cache blocking: A block (mc, kc) sits in L2, B panel (kc, nc) in L3
  // out = Ap^T Bp over kc steps. Ap: kc steps of mr values (packed A, rows past out.rows
  // unread); Bp: kc steps of nr values (packed B). out.rows and out.cols are at least 1.
  void (*gemm_tile)(int64_t kc, const float* Ap, const float* Bp, const TileOut& out);
  // The same tile reading out.rows rows of a row-major fp32 A in place (row stride lda): GEMMs
  // of few columns, and convolutions reading their input as patches, would spend as long
  // packing A.
  void (*gemm_tile_rows)(int64_t kc, const float* A, int64_t lda, const float* Bp, const TileOut& out);
  // Packing fp32 operands into the micro-kernel's panels, dst (kc, width), lanes count..width
  // zero. gather: dst[p, i] = src[i * ld + p] (count rows of src, each read along p); copy:
  // dst[p, i] = src[p * ld + i]. Packing is what a GEMM of few rows (a batch of one image)
  // spends its time on besides the tiles, so each set has its own.
  void (*pack_gather)(float* dst, const float* src, int64_t ld, int64_t kc, int count, int width);
  void (*pack_copy)(float* dst, const float* src, int64_t ld, int64_t kc, int count, int width);
  // The same from stored bf16 values, widened on the way (mixed precision's weights).
  void (*pack_gather_bf16)(float* dst, const uint16_t* src, int64_t ld, int64_t kc, int count, int width);
  // A gather of fp32 values rounded through bf16 in registers (an fp32 operand met beside a bf16
  // one, as through_bf16 rounds it): a separate rounding pass cost the bf16 GEMM 2-3%.
  void (*pack_gather_rounded)(float* dst, const float* src, int64_t ld, int64_t kc, int count, int width);
  void (*pack_copy_bf16)(float* dst, const uint16_t* src, int64_t ld, int64_t kc, int count, int width);
  // Softmax row helpers for attention, accurate to a few ulp; exp(-inf) = 0.
  float (*row_max)(const float* x, int64_t n);
  // x[i] = exp(x[i] - shift) for i < n; returns the sum of the new values. For softmax, whose
  // shifted scores are at most 0: a set may give 0 below exp(-86) and cap above exp(88).
  float (*exp_shift_sum)(float* x, int64_t n, float shift);
  // Exact-erf GELU: y = x Phi(x); dx += dy (Phi(x) + x phi(x)).
  void (*gelu_forward)(float* y, const float* x, int64_t n);
  void (*gelu_backward)(float* dx, const float* dy, const float* x, int64_t n);
  // y = sigmoid(x), or x * sigmoid(x) (SiLU) when times_x.
  void (*sigmoid)(float* y, const float* x, int64_t n, bool times_x);
  // A GEMM's epilogue on c (rows, cols), row stride ldc: c += bias (cols, when not null) on
  // every row, then c = SiLU(c) when silu: for GEMM paths whose tiles do not run it themselves
  // (AMX, AVX512_BF16), as a pass over C.
  void (*bias_silu)(float* c, int64_t ldc, int64_t rows, int64_t cols, const float* bias, bool silu);
  // Inverted dropout over elements [first, first + n) of a tensor: kept when
  // uniform01(key, first + i) >= p. Forward: y = kept ? x * scale : 0. Backward: dx += kept ? dy * scale : 0.
  void (*dropout)(float* y, const float* x, float p, float scale, uint32_t key_a, uint32_t key_b, int64_t first,
                  int64_t n, bool accumulate);
  // One output pixel of a depthwise convolution, channels last: out (C) = bias (or 0) + the sum
  // over taps t < kk (at most kMaxDepthwiseTaps) whose input in[t] (C) is not null (padding) of
  // taps[t * C ..] * in[t], each channel summed in registers in a fixed order, then SiLU when
  // silu, and written once.
  void (*depthwise_pixel)(float* out, const float* const* in, const float* taps, const float* bias, int64_t C, int kk,
                          bool silu);
  // bf16 rounding as f32_to_bf16 does it (nearest even, NaN kept quiet): mixed precision rounds
  // every saved activation (to_bf16) and every fp32 GEMM operand met beside a bf16 one
  // (through_bf16: rounded, then widened back).
  void (*to_bf16)(uint16_t* dst, const float* src, int64_t n);
  void (*through_bf16)(float* dst, const float* src, int64_t n);
  // bf16 widened to fp32 (exact: its bits are an fp32's top half), for every op that reads a
  // bf16-stored activation through fp32 a block at a time.
  void (*from_bf16)(float* dst, const uint16_t* src, int64_t n);
  // gelu_forward and gelu_backward reading x in bf16, widened in registers: the same results as
  // through a widened copy, without it. (Dropout keeps its widened copy: on Zen 4 a fused bf16
  // loop was slower than the three passes in L1.)
  void (*gelu_forward_bf16)(float* y, const uint16_t* x, int64_t n);
  void (*gelu_backward_bf16)(float* dx, const float* dy, const uint16_t* x, int64_t n);
};

// The most taps (k x k) a depthwise convolution may have: 15 x 15.
constexpr int kMaxDepthwiseTaps = 225;

// A depthwise pixel's taps that lie inside the image, in order: rows[i] the input pixel and
// tap_rows[i] the weights (kMaxDepthwiseTaps each), so that the vector sets' loops over them
// have no branch. Returns how many there are.
inline int depthwise_taps_inside(const float** rows, const float** tap_rows, const float* const* in, const float* taps,
                                 int64_t C, int kk) {
  int n = 0;
  kk = std::min(kk, kMaxDepthwiseTaps);  // callers check; never write past the lists
  for (int t = 0; t < kk; ++t)
    if (in[t]) rows[n] = in[t], tap_rows[n++] = taps + t * C;
  return n;
}

// The portable packing routines, also the fallback of the wider sets for odd widths.
// kRound: fp32 values rounded through bf16 on the way.
template <typename T, bool kRound = false>
void pack_gather_generic(float* dst, const T* src, int64_t ld, int64_t kc, int count, int width);
template <typename T>
void pack_copy_generic(float* dst, const T* src, int64_t ld, int64_t kc, int count, int width);

extern const KernelSet kGenericKernels;
#if defined(__x86_64__) || defined(_M_X64)
extern const KernelSet kAvx2Kernels;
extern const KernelSet kAvx512Kernels;
#endif

// Names of the kernel sets this CPU can run, best first.
std::vector<std::string> supported_kernel_sets();
const KernelSet& active_kernels();
// Throws std::invalid_argument for an unknown name or one this CPU cannot run.
void set_active_kernels(const std::string& name);

// y[at, at + n) = values, rounded to y's storage type (bf16 by the active set's to_bf16).
void store_values(TensorOut y, int64_t at, const float* values, int64_t n);
// x[at, at + n) as fp32: x itself when it is fp32, else widened into buffer (n), which is returned.
const float* load_values(TensorRef x, int64_t at, int64_t n, float* buffer);
// Elements an op takes through fp32 at a time when its tensors are stored narrower: widened,
// worked on and rounded while they are in L1, instead of in passes over whole tensors.
constexpr int64_t kWidenBlock = 1024;

}  // namespace lt::cpu
