// The CUDA backend: the ops of ops.h on an NVIDIA GPU. Buffers are device memory; each op is
// one or a few kernel launches on the backend's stream, in the op families' files (memory.cu,
// gemm.cu, linear.cu, attention.cu, norm_act.cu, conv.cu, elementwise.cu, optim.cu), timed per
// op by profile.h when asked. The kernels are checked against the CPU backend by
// tests/parity.test.ts on a GPU; GEMMs go through cuBLASLt (gemm.cu), loaded at run time
// (cublaslt.h).
#pragma once
#include "../ops.h"

namespace lt::cuda {

// Why no CUDA device can be used here ("" when one can): no driver, no device, no cuBLASLt, ...
std::string unavailable_reason();
// The device in use, e.g. "NVIDIA H200, compute capability 9.0, 139.8 GiB" (when usable).
std::string device_description();

class CudaOps final : public Ops {
 public:
  std::string name() const override { return "cuda"; }
  bool host_memory() const override { return false; }
  void set_allow_tf32(bool allow) override { allow_tf32_ = allow; }
#include "../backend_ops.inc"

 private:
  // How a LoRA linear joins its base and low-rank paths (linear.cu).
  enum class LoraPath { separate, merged, concatenated };
  // in_dim: the GEMM's inner dimension (in forward, out backward).
  LoraPath lora_path(TensorRef W, bool dropout, int64_t rows, int64_t in_dim, int64_t in, int64_t out) const;
  bool allow_tf32_ = false;
};

// dst (n) of dst_type = src (n), queued on the default stream (memory.cu).
void convert_device(void* dst, DType dst_type, TensorRef src, int64_t n);
// C (M, N) = alpha op(A) op(B) + beta C (+ bias (N) on every row when given), through
// cuBLASLt (gemm.cu).
void gemm_device(TensorOut C, TensorRef A, TensorRef B, int64_t M, int64_t N, int64_t K, bool transA, bool transB,
                 float alpha, float beta, int64_t lda, int64_t ldb, int64_t ldc, bool tf32,
                 const float* bias = nullptr);

}  // namespace lt::cuda
