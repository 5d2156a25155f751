// The op interface: every op the training step needs, declared once. Each backend
// (native/cpu, the reference, and native/cuda) implements this class; models are written
// against it.
//
// Conventions (llm.c style): arguments are outputs, then inputs, then sizes. Tensors are
// row-major fp32 and every pointer carries a shape comment; a TensorRef input may also be
// bf16 or fp16 (dtype.h), read as fp32 with fp32 accumulation (mixed precision's frozen
// weights). Backward ops ACCUMULATE into their gradient outputs (+=), so callers zero
// gradients once per step, and a tensor that feeds several consumers (residuals, shared
// keys/values) simply receives each contribution; the linear ops can overwrite instead, for a
// gradient's first contribution. A gradient pointer that may be null is optional: null means
// "frozen, do not compute".
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "dtype.h"

namespace lt {

// conv2d_forward adds a residual only to an output without activation (every backend checks).
inline void check_conv2d_residual(const float* residual, bool silu) {
  if (residual && silu) throw std::invalid_argument("conv2d_forward: a residual is added only without silu");
}

class Ops {
 public:
  virtual ~Ops() = default;
  virtual std::string name() const = 0;
  // Whether buffers are host memory (CPU) or device memory (GPU backends): the JS op bindings
  // stage host arrays through device buffers for the latter.
  virtual bool host_memory() const { return true; }

  // ---- Memory: device buffers for models (host memory on the CPU backend) ------------------
  virtual float* alloc(int64_t n) = 0;  // n floats, 64-byte aligned, uninitialised
  virtual void release(float* p) = 0;
  virtual void upload_bytes(void* dst, const void* host_src, int64_t bytes) = 0;
  virtual void download_bytes(void* host_dst, const void* src, int64_t bytes) = 0;
  void upload(float* dst, const float* host_src, int64_t n) { upload_bytes(dst, host_src, n * 4); }
  void download(float* host_dst, const float* src, int64_t n) { download_bytes(host_dst, src, n * 4); }
  virtual void zero(float* x, int64_t n) = 0;
  // y += alpha * x. y, x (n).
  virtual void axpy(float* y, const float* x, float alpha, int64_t n) = 0;
  // dst (n) of dst_type = src (n) rounded to nearest even (dtype.h); either side may be fp32.
  virtual void convert(void* dst, DType dst_type, TensorRef src, int64_t n) = 0;
  // Whether fp32 GEMMs may round their inputs to TF32 (tensor cores; PyTorch's allow_tf32).
  // Backends without TF32 ignore it.
  virtual void set_allow_tf32(bool allow) { (void)allow; }

  // ---- GEMM --------------------------------------------------------------------------------
  // C = alpha * op(A) @ op(B) + beta * C, op(X) = X or X^T. When beta == 0, C is not read.
  // C (M, N) row stride ldc; op(A) (M, K) from A with row stride lda; op(B) (K, N) likewise.
  // A and B may be bf16/fp16; C is fp32 and the products accumulate in fp32.
  virtual void gemm(float* C, TensorRef A, TensorRef B, int64_t M, int64_t N, int64_t K, bool transA, bool transB,
                    float alpha, float beta, int64_t lda, int64_t ldb, int64_t ldc) = 0;

  // ---- Linear and LoRA linear --------------------------------------------------------------
  // y = x W^T + b. y (rows, out), x (rows, in), W (out, in) of any dtype, b (out) or null.
  // y may be bf16/fp16 (an activation mixed precision keeps): the GEMM then reads its
  // operands in that type too.
  virtual void linear_forward(TensorOut y, TensorRef x, TensorRef W, const float* b, int64_t rows, int64_t in,
                              int64_t out) = 0;
  // dx (rows, in) or null, dW (out, in) or null, db (out) or null; dy (rows, out).
  // accumulate_dx false overwrites dx instead of adding to it (a model's first contribution:
  // no zeroing pass, no read of the old values); dW and db always accumulate.
  virtual void linear_backward(float* dx, float* dW, float* db, const float* dy, TensorRef x, TensorRef W, int64_t rows,
                               int64_t in, int64_t out, bool accumulate_dx) = 0;
  // y = x W^T + b + scale * (x_lora A^T) B^T, where x_lora is x after LoRA dropout (null: x).
  // Also writes xa = x_lora A^T (rows, r), kept for backward. A (r, in), B (out, r).
  virtual void lora_linear_forward(TensorOut y, float* xa, TensorRef x, TensorRef x_lora, TensorRef W, const float* b,
                                   const float* A, const float* B, float scale, int64_t rows, int64_t in, int64_t out,
                                   int64_t r) = 0;
  // dA (r, in), dB (out, r) always; dx, dW, db optional as in linear_backward. The LoRA path's
  // input gradient goes to dx_lora (rows, in) when given, overwriting it (a scratch: the
  // caller applies the dropout mask and adds it to dx), else into dx with the base path's.
  // x may be bf16/fp16 (mixed precision keeps its activations so): it only feeds GEMMs, where
  // the fp32 operand beside it is rounded to its type (as autocast does).
  virtual void lora_linear_backward(float* dx, float* dx_lora, float* dA, float* dB, float* dW, float* db,
                                    const float* dy, TensorRef x, const float* x_lora, const float* xa, TensorRef W,
                                    const float* A, const float* B, float scale, int64_t rows, int64_t in, int64_t out,
                                    int64_t r, bool accumulate_dx) = 0;

  // ---- Attention ---------------------------------------------------------------------------
  // Non-causal multi-head attention, heads interleaved in channels (head h = channels
  // [h*d, h*d+d)). o = softmax(q k^T * scale) v per head, never materialising the (N, M) scores.
  // o (B, N, H*d), lse (B, H, N) log-sum-exp of the scaled scores; q (B, N, H*d),
  // k (B, M, H*d), v (B, M, H*d). Row strides of q/k/v/o are H*d. compute bf16/f16 lets a
  // backend multiply in that type (tensor cores, AVX512_BF16; mixed precision), accumulating in
  // fp32; the CPU computes bf16 so on its AVX-512 kernel set where the CPU has AVX512_BF16 (q, k,
  // v stored fp32 or bf16), and in fp32 otherwise. q, k and v may be stored bf16/fp16,
  // and o written so (rounded once).
  virtual void attention_forward(TensorOut o, float* lse, TensorRef q, TensorRef k, TensorRef v, int64_t B, int64_t N,
                                 int64_t M, int64_t H, int64_t d, float scale, DType compute) = 0;
  // dq (B, N, H*d), dk (B, M, H*d), dv (B, M, H*d); dout like o. q, k, v and o may be
  // bf16/fp16 (mixed precision keeps them so for the backward).
  virtual void attention_backward(float* dq, float* dk, float* dv, const float* dout, TensorRef q, TensorRef k,
                                  TensorRef v, TensorRef o, const float* lse, int64_t B, int64_t N, int64_t M,
                                  int64_t H, int64_t d, float scale, DType compute) = 0;

  // Forward-only attention for the frozen text encoder: key j of batch item b takes part only
  // where key_mask[b * M + j] != 0 (null: all) and, when causal, only for j <= i (query i).
  // A query that sees no key gets zeros. key_mask is a host pointer (B, M).
  virtual void attention_masked_forward(float* o, const float* q, const float* k, const float* v,
                                        const uint8_t* key_mask, bool causal, int64_t B, int64_t N, int64_t M,
                                        int64_t H, int64_t d, float scale) = 0;

  // ---- Norms and activations (channels last: the last dim is the channel dim) --------------
  // LayerNorm with weight and bias, forward only (frozen encoders). y, x (rows, C).
  virtual void layernorm_affine_forward(float* y, const float* x, const float* weight, const float* bias, int64_t rows,
                                        int64_t C, float eps) = 0;
  // QuickGELU (CLIP's original activation): y = x * sigmoid(1.702 x). Forward only.
  virtual void quick_gelu_forward(float* y, const float* x, int64_t n) = 0;
  // out (n, dim) = table[ids[i]] rows; ids is a host pointer, each id < rows of table.
  virtual void embedding_forward(float* out, const float* table, const int32_t* ids, int64_t n, int64_t dim) = 0;
  // y = (x - mean) * rstd over the last dim, no affine. y, x (rows, C); mean, rstd (rows). y
  // may be stored bf16/fp16 (rounded once).
  virtual void layernorm_forward(TensorOut y, float* mean, float* rstd, const float* x, int64_t rows, int64_t C,
                                 float eps) = 0;
  virtual void layernorm_backward(float* dx, const float* dy, const float* x, const float* mean, const float* rstd,
                                  int64_t rows, int64_t C) = 0;
  // Exact-erf GELU. y, x (n).
  virtual void gelu_forward(float* y, const float* x, int64_t n) = 0;
  virtual void gelu_backward(float* dx, const float* dy, const float* x, int64_t n) = 0;
  virtual void silu_forward(float* y, const float* x, int64_t n) = 0;
  virtual void silu_backward(float* dx, const float* dy, const float* x, int64_t n) = 0;
  virtual void leaky_relu_forward(float* y, const float* x, float slope, int64_t n) = 0;
  virtual void leaky_relu_backward(float* dx, const float* dy, const float* x, float slope, int64_t n) = 0;
  // GlobalResponseNorm (ConvNeXt-V2): g[b,c] = ||u[b,:,c]||_2 over positions,
  // nx = g / (mean_c g + eps), y = gamma * (u * nx) + beta + u.
  // y, u (B, P, C) with P = H*W positions; gamma, beta (C).
  virtual void grn_forward(float* y, const float* u, const float* gamma, const float* beta, int64_t B, int64_t P,
                           int64_t C, float eps) = 0;
  // du (B, P, C) or null; dgamma, dbeta (C) or null.
  virtual void grn_backward(float* du, float* dgamma, float* dbeta, const float* dy, const float* u, const float* gamma,
                            int64_t B, int64_t P, int64_t C, float eps) = 0;

  // Fused forms of the prior's chains, so the GPU passes over the data once where the chain
  // would pass several times. y = GRN(GELU(u)) without storing GELU(u) (eps, gamma, beta as
  // grn_forward). y, u (B, P, C), either of them bf16/fp16 too.
  virtual void gelu_grn_forward(TensorOut y, TensorRef u, const float* gamma, const float* beta, int64_t B, int64_t P,
                                int64_t C, float eps) = 0;
  // du (B, P, C) += the gradient of gelu_grn_forward wrt u (gamma and beta frozen); u may be
  // bf16/fp16.
  virtual void gelu_grn_backward(float* du, const float* dy, TensorRef u, const float* gamma, int64_t B, int64_t P,
                                 int64_t C, float eps) = 0;
  // The Würstchen TimestepBlock then the AttnBlock's LayerNorm: y = x * (1 + a) + b (the
  // residual stream, ab = [a | b] per batch item) and normed = LayerNorm(y) with mean, rstd
  // (B, P) as layernorm_forward. y, normed, x (B, P, C); ab (B, 2C). normed may be stored
  // bf16/fp16.
  virtual void modulate_layernorm_forward(float* y, TensorOut normed, float* mean, float* rstd, const float* x,
                                          const float* ab, int64_t B, int64_t P, int64_t C, float eps) = 0;

  // ---- Convolutions ------------------------------------------------------------------------
  // 3x3 depthwise, padding 1, stride 1, channels last. y, x (B, H, W, C); w (C, 1, 3, 3);
  // bias (C) or null.
  virtual void depthwise_conv3x3_forward(float* y, const float* x, const float* w, const float* bias, int64_t B,
                                         int64_t H, int64_t W, int64_t C) = 0;
  // dx or null, dw or null, dbias or null.
  virtual void depthwise_conv3x3_backward(float* dx, float* dw, float* dbias, const float* dy, const float* x,
                                          const float* w, int64_t B, int64_t H, int64_t W, int64_t C) = 0;
  // 1x1 convolution in PyTorch's NCHW layout. y (B, Cout, P); x (B, Cin, P) with P = H*W;
  // w (Cout, Cin); bias (Cout) or null.
  virtual void conv1x1_forward(float* y, const float* x, const float* w, const float* bias, int64_t B, int64_t Cin,
                               int64_t Cout, int64_t P) = 0;
  virtual void conv1x1_backward(float* dx, float* dw, float* dbias, const float* dy, const float* x, const float* w,
                                int64_t B, int64_t Cin, int64_t Cout, int64_t P) = 0;

  // ---- Model glue --------------------------------------------------------------------------
  // Timestep modulation: y = x * (1 + a) + b with ab = [a | b] per batch item.
  // y, x (B, P, C); ab (B, 2C).
  virtual void modulate_forward(float* y, const float* x, const float* ab, int64_t B, int64_t P, int64_t C) = 0;
  // dx (B, P, C) or null; dab (B, 2C) or null.
  virtual void modulate_backward(float* dx, float* dab, const float* dy, const float* x, const float* ab, int64_t B,
                                 int64_t P, int64_t C) = 0;
  // Inverted dropout with a counter-based RNG (rng.h): element i is kept when
  // uniform01(seed, i) >= p and scaled by 1 / (1 - p). The mask is recomputed from (seed, i) in
  // the backward, so nothing is stored; every backend draws the same mask. y, x (n), n < 2^32;
  // the forward's y and x may be bf16/fp16.
  virtual void dropout_forward(TensorOut y, TensorRef x, float p, uint64_t seed, int64_t n) = 0;
  virtual void dropout_backward(float* dx, const float* dy, float p, uint64_t seed, int64_t n) = 0;
  // out = residual + dropout(y) (dropout as dropout_forward): the end of a residual branch in
  // one pass. out, y, residual (n).
  virtual void dropout_add_forward(float* out, const float* y, const float* residual, float p, uint64_t seed,
                                   int64_t n) = 0;
  // Sequence concatenation per batch item: out (B, Na + Nb, C) = [a (B, Na, C); b (B, Nb, C)],
  // each of any storage type (out rounded to its own).
  virtual void concat_seq(TensorOut out, TensorRef a, TensorRef b, int64_t B, int64_t Na, int64_t Nb, int64_t C) = 0;
  // The inverse for gradients: da += dout[:, :Na], db += dout[:, Na:] (either may be null).
  virtual void split_seq_backward(float* da, float* db, const float* dout, int64_t B, int64_t Na, int64_t Nb,
                                  int64_t C) = 0;
  // Channels-first <-> channels-last: out (B, P, C) = x (B, C, P) transposed per batch item.
  virtual void transpose_cp(float* out, const float* x, int64_t B, int64_t C, int64_t P) = 0;
  // The Wuerstchen prior's output: out = (x_in - a) / (|1 - b| + 1e-5) with [a | b] = ab.
  // out, x_in (B, Cin, P) channels first; ab (B, P, 2 Cin) channels last.
  virtual void prior_output_forward(float* out, const float* x_in, const float* ab, int64_t B, int64_t Cin,
                                    int64_t P) = 0;
  // dab (B, P, 2 Cin) += the gradient through both halves; dout like out.
  virtual void prior_output_backward(float* dab, const float* dout, const float* x_in, const float* ab, int64_t B,
                                     int64_t Cin, int64_t P) = 0;

  // ---- Forward-only image encoder and decoder ops (channels last) --------------------------
  // Convolution with groups = 1, padding k / 2, stride 1 or 2: y (B, Ho, Wo, Cout) with
  // Ho = ceil(H / stride); x (B, H, W, Cin); w (Cout, k, k, Cin); bias (Cout) or null. With
  // silu, y = SiLU(conv): EfficientNet's activation applied as the output is written, not in a
  // second pass over it. With residual (y's shape; may be y itself), y = conv + residual: a
  // block's skip connection added as the output is written (not with silu: the blocks that add
  // one end on a projection without activation).
  virtual void conv2d_forward(float* y, const float* x, const float* w, const float* bias, const float* residual,
                              int64_t B, int64_t H, int64_t W, int64_t Cin, int64_t Cout, int64_t k, int64_t stride,
                              bool silu) = 0;
  // Depthwise k x k convolution (k at most 15), padding k / 2, stride 1 or 2: y (B, Ho, Wo, C); w (C, k, k);
  // silu as for conv2d_forward. The padding holds zeros, or with replicate the nearest edge
  // pixel (ReplicationPad2d, as the Paella VQGAN pads).
  virtual void depthwise_conv_forward(float* y, const float* x, const float* w, const float* bias, int64_t B, int64_t H,
                                      int64_t W, int64_t C, int64_t k, int64_t stride, bool replicate, bool silu) = 0;
  // Transposed convolution (PyTorch's ConvTranspose2d, groups = 1): y (B, Ho, Wo, Cout) with
  // Ho = (H - 1) * stride - 2 * pad + k; x (B, H, W, Cin); w (Cin, Cout, k, k) as PyTorch stores
  // it; bias (Cout) or null.
  virtual void conv_transpose2d_forward(float* y, const float* x, const float* w, const float* bias, int64_t B,
                                        int64_t H, int64_t W, int64_t Cin, int64_t Cout, int64_t k, int64_t stride,
                                        int64_t pad) = 0;
  // PixelUnshuffle in channels last: y (B, H/r, W/r, C r r) with channel c r r + i r + j of pixel
  // (h, w) = x (B, H, W, C) at (h r + i, w r + j), channel c. A k x k stride-k convolution is
  // this, then a Linear with its weight (Cout, C, k, k) read as (Cout, C k k).
  virtual void pixel_unshuffle(float* y, const float* x, int64_t B, int64_t H, int64_t W, int64_t C, int64_t r) = 0;
  virtual void sigmoid_forward(float* y, const float* x, int64_t n) = 0;
  // out (B, C) = mean over positions of x (B, P, C).
  virtual void channel_mean(float* out, const float* x, int64_t B, int64_t P, int64_t C) = 0;
  // y (B, P, C) = x * s[b, c]; y may be x.
  virtual void scale_channels(float* y, const float* x, const float* s, int64_t B, int64_t P, int64_t C) = 0;

  // ---- Loss --------------------------------------------------------------------------------
  // Returns mean((pred - target)^2); dpred (n) or null receives += grad_scale * 2 (pred - target) / n.
  virtual double mse_loss(float* dpred, const float* pred, const float* target, int64_t n, float grad_scale) = 0;

  // ---- Optimiser ---------------------------------------------------------------------------
  // One AdamW step over many tensors (PyTorch semantics: decoupled weight decay
  // p -= lr * wd * p, bias-corrected moments). step is 1-based. Each gradient is read as
  // grad * grad_scale (as torch's fused AdamW): the loss scale's inverse times the clipping
  // coefficient, so neither needs a pass of its own.
  struct AdamWTensor {
    float* param;       // (n)
    float* exp_avg;     // (n)
    float* exp_avg_sq;  // (n)
    const float* grad;  // (n)
    int64_t n;
  };
  virtual void adamw(const AdamWTensor* tensors, int64_t count, float lr, float beta1, float beta2, float eps,
                     float weight_decay, int64_t step, float grad_scale) = 0;
  // Global L2 norm over many tensors; when max_norm > 0 and the norm exceeds it, scales every
  // tensor by max_norm / (norm + 1e-6) (torch.nn.utils.clip_grad_norm_). Returns the norm.
  virtual double clip_grad_norm(float* const* grads, const int64_t* sizes, int64_t count, double max_norm) = 0;
};

// Temporary backend buffers released together when the scope ends.
class Scratch {
 public:
  explicit Scratch(Ops& ops) : ops_(ops) {}
  ~Scratch() {
    for (float* p : owned_) ops_.release(p);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  float* alloc(int64_t n) {
    owned_.push_back(ops_.alloc(n));
    return owned_.back();
  }

 private:
  Ops& ops_;
  std::vector<float*> owned_;
};

}  // namespace lt
