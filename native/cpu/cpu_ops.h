// The CPU backend: the reference implementation of every op in ops.h. Each op family lives in
// its own file (memory.cpp, gemm.cpp, linear.cpp, attention.cpp, norm_act.cpp, conv.cpp,
// elementwise.cpp, optim.cpp).
#pragma once
#include "../ops.h"

namespace lt::cpu {

class CpuOps final : public Ops {
 public:
  std::string name() const override { return "cpu"; }
  float* alloc(int64_t n) override;
  void release(float* p) override;
  void upload_bytes(void* dst, const void* host_src, int64_t bytes) override;
  void download_bytes(void* host_dst, const void* src, int64_t bytes) override;
  void zero(float* x, int64_t n) override;
  void axpy(float* y, const float* x, float alpha, int64_t n) override;
  void convert(void* dst, DType dst_type, TensorRef src, int64_t n) override;
  void gemm(float* C, TensorRef A, TensorRef B, int64_t M, int64_t N, int64_t K, bool transA, bool transB, float alpha, float beta, int64_t lda, int64_t ldb, int64_t ldc) override;
  void linear_forward(TensorOut y, TensorRef x, TensorRef W, const float* b, int64_t rows, int64_t in, int64_t out) override;
  void linear_backward(float* dx, float* dW, float* db, const float* dy, TensorRef x, TensorRef W, int64_t rows, int64_t in, int64_t out, bool accumulate_dx) override;
  void lora_linear_forward(TensorOut y, float* xa, TensorRef x, TensorRef x_lora, TensorRef W, const float* b, const float* A, const float* B, float scale, int64_t rows, int64_t in, int64_t out, int64_t r) override;
  void lora_linear_backward(float* dx, float* dx_lora, float* dA, float* dB, float* dW, float* db, const float* dy, TensorRef x, const float* x_lora, const float* xa, TensorRef W, const float* A, const float* B, float scale, int64_t rows, int64_t in, int64_t out, int64_t r, bool accumulate_dx) override;
  void attention_forward(float* o, float* lse, TensorRef q, TensorRef k, TensorRef v, int64_t B, int64_t N, int64_t M, int64_t H, int64_t d, float scale, DType compute) override;
  void attention_backward(float* dq, float* dk, float* dv, const float* dout, TensorRef q, TensorRef k, TensorRef v, TensorRef o, const float* lse, int64_t B, int64_t N, int64_t M, int64_t H, int64_t d, float scale, DType compute) override;
  void attention_masked_forward(float* o, const float* q, const float* k, const float* v, const uint8_t* key_mask, bool causal, int64_t B, int64_t N, int64_t M, int64_t H, int64_t d, float scale) override;
  void layernorm_affine_forward(float* y, const float* x, const float* weight, const float* bias, int64_t rows, int64_t C, float eps) override;
  void quick_gelu_forward(float* y, const float* x, int64_t n) override;
  void embedding_forward(float* out, const float* table, const int32_t* ids, int64_t n, int64_t dim) override;
  void layernorm_forward(float* y, float* mean, float* rstd, const float* x, int64_t rows, int64_t C, float eps) override;
  void layernorm_backward(float* dx, const float* dy, const float* x, const float* mean, const float* rstd, int64_t rows, int64_t C) override;
  void gelu_forward(float* y, const float* x, int64_t n) override;
  void gelu_backward(float* dx, const float* dy, const float* x, int64_t n) override;
  void silu_forward(float* y, const float* x, int64_t n) override;
  void silu_backward(float* dx, const float* dy, const float* x, int64_t n) override;
  void leaky_relu_forward(float* y, const float* x, float slope, int64_t n) override;
  void leaky_relu_backward(float* dx, const float* dy, const float* x, float slope, int64_t n) override;
  void grn_forward(float* y, const float* u, const float* gamma, const float* beta, int64_t B, int64_t P, int64_t C, float eps) override;
  void grn_backward(float* du, float* dgamma, float* dbeta, const float* dy, const float* u, const float* gamma, int64_t B, int64_t P, int64_t C, float eps) override;
  void depthwise_conv3x3_forward(float* y, const float* x, const float* w, const float* bias, int64_t B, int64_t H, int64_t W, int64_t C) override;
  void depthwise_conv3x3_backward(float* dx, float* dw, float* dbias, const float* dy, const float* x, const float* w, int64_t B, int64_t H, int64_t W, int64_t C) override;
  void conv1x1_forward(float* y, const float* x, const float* w, const float* bias, int64_t B, int64_t Cin, int64_t Cout, int64_t P) override;
  void conv1x1_backward(float* dx, float* dw, float* dbias, const float* dy, const float* x, const float* w, int64_t B, int64_t Cin, int64_t Cout, int64_t P) override;
  void modulate_forward(float* y, const float* x, const float* ab, int64_t B, int64_t P, int64_t C) override;
  void modulate_backward(float* dx, float* dab, const float* dy, const float* x, const float* ab, int64_t B, int64_t P, int64_t C) override;
  void dropout_forward(TensorOut y, TensorRef x, float p, uint64_t seed, int64_t n) override;
  void dropout_backward(float* dx, const float* dy, float p, uint64_t seed, int64_t n) override;
  void dropout_add_forward(float* out, const float* y, const float* residual, float p, uint64_t seed, int64_t n) override;
  void gelu_grn_forward(TensorOut y, TensorRef u, const float* gamma, const float* beta, int64_t B, int64_t P, int64_t C, float eps) override;
  void gelu_grn_backward(float* du, const float* dy, TensorRef u, const float* gamma, int64_t B, int64_t P, int64_t C, float eps) override;
  void modulate_layernorm_forward(float* y, float* normed, float* mean, float* rstd, const float* x, const float* ab, int64_t B, int64_t P, int64_t C, float eps) override;
  void concat_seq(float* out, const float* a, const float* b, int64_t B, int64_t Na, int64_t Nb, int64_t C) override;
  void split_seq_backward(float* da, float* db, const float* dout, int64_t B, int64_t Na, int64_t Nb, int64_t C) override;
  void transpose_cp(float* out, const float* x, int64_t B, int64_t C, int64_t P) override;
  void prior_output_forward(float* out, const float* x_in, const float* ab, int64_t B, int64_t Cin, int64_t P) override;
  void prior_output_backward(float* dab, const float* dout, const float* x_in, const float* ab, int64_t B, int64_t Cin, int64_t P) override;
  void conv2d_forward(float* y, const float* x, const float* w, const float* bias, int64_t B, int64_t H, int64_t W, int64_t Cin, int64_t Cout, int64_t k, int64_t stride) override;
  void depthwise_conv_forward(float* y, const float* x, const float* w, const float* bias, int64_t B, int64_t H, int64_t W, int64_t C, int64_t k, int64_t stride) override;
  void sigmoid_forward(float* y, const float* x, int64_t n) override;
  void channel_mean(float* out, const float* x, int64_t B, int64_t P, int64_t C) override;
  void scale_channels(float* y, const float* x, const float* s, int64_t B, int64_t P, int64_t C) override;
  double mse_loss(float* dpred, const float* pred, const float* target, int64_t n, float grad_scale) override;
  void adamw(const AdamWTensor* tensors, int64_t count, float lr, float beta1, float beta2, float eps, float weight_decay, int64_t step, float grad_scale) override;
  double clip_grad_norm(float* const* grads, const int64_t* sizes, int64_t count, double max_norm) override;
};

}  // namespace lt::cpu
