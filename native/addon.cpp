// N-API entry point: exposes the op interface (ops.h) to JS. Sizes come first in each op's
// argument list here (unlike ops.h) only where a buffer's expected length depends on them;
// the JS wrapper in src/native/ops.ts is the documented API.
#include <napi.h>

#include <memory>
#include <string>
#include <vector>

#include "cpu/cpu_info.h"
#include "cpu/cpu_ops.h"
#include "cpu/gemm.h"
#include "cpu/kernels.h"
#include "cpu/profile.h"
#include "cpu/thread_pool.h"
#ifdef LORA_TRAIN_HAVE_CUDA
#include "cuda/cuda_ops.h"
#include "cuda/profile.h"
#endif
#include "backends.h"
#include "file_lock.h"
#include "model_binding.h"
#include "napi_call.h"
#include "parallel/collective_binding.h"

#ifndef LORA_TRAIN_VERSION
#define LORA_TRAIN_VERSION "dev"
#endif

namespace lt {
namespace {

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("version", LORA_TRAIN_VERSION);
  Napi::Array backends = Napi::Array::New(env);
  backends.Set(0u, "cpu");
#ifdef LORA_TRAIN_HAVE_CUDA
  backends.Set(1u, "cuda");
  const std::string reason = cuda::unavailable_reason();
  out.Set("cuda",
          reason.empty() ? Napi::Value(Napi::Boolean::New(env, true)) : Napi::Value(Napi::String::New(env, reason)));
  if (reason.empty()) out.Set("cudaDevice", cuda::device_description());
#else
  out.Set("cuda", "this build has no CUDA backend");
#endif
  out.Set("backends", backends);
  Napi::Object cpu = Napi::Object::New(env);
  cpu.Set("kernels", cpu::active_kernels().name);
  Napi::Array available = Napi::Array::New(env);
  auto names = cpu::supported_kernel_sets();
  for (size_t i = 0; i < names.size(); ++i) available.Set(i, names[i]);
  cpu.Set("availableKernels", available);
  cpu.Set("amx", cpu::have_amx());
  cpu.Set("avx512bf16", cpu::have_avx512_bf16());
  cpu.Set("threads", cpu::num_threads());
  cpu::CpuIdentity id = cpu::cpu_identity();
  cpu.Set("vendor", id.vendor);
  cpu.Set("brand", id.brand);
  cpu.Set("family", id.family);
  cpu.Set("model", id.model);
  out.Set("cpu", cpu);
  return out;
}

// (seconds) -> GHz, measured on the calling (JS) thread: it is short and must not share a core.
Napi::Value MeasureClockGHz(const Napi::CallbackInfo& info) {
  OpCall call(info, "measureClockGHz");
  double seconds = call.number(0, "seconds");
  return Napi::Number::New(info.Env(), cpu::measure_clock_ghz(seconds));
}

Napi::Value SetCpuKernels(const Napi::CallbackInfo& info) {
  OpCall call(info, "setCpuKernels");
  std::string name = call.string(0, "name");
  try {
    cpu::set_active_kernels(name);
  } catch (const std::exception& e) {
    throw Napi::RangeError::New(info.Env(), e.what());
  }
  return info.Env().Undefined();
}

// (device, C, A, B, M, N, K, transA, transB, alpha, beta, aType, bType)
Napi::Value Gemm(const Napi::CallbackInfo& info) {
  OpCall call(info, "gemm");
  Ops& ops = backend_for(call, 0);
  int64_t M = call.dim(4, "M"), N = call.dim(5, "N"), K = call.dim(6, "K");
  bool ta = call.flag(7, "transA"), tb = call.flag(8, "transB");
  float alpha = static_cast<float>(call.number(9, "alpha")), beta = static_cast<float>(call.number(10, "beta"));
  DType at = call.dtype(11, "aType"), bt = call.dtype(12, "bType");
  if (at != DType::f32 && bt != DType::f32 && at != bt)
    call.fail_range("operands of one low-precision type", "bType", info[12]);
  float* C = call.f32(1, "C", M * N);
  TensorRef A(call.typed_tensor(2, "A", M * K, at), at);
  TensorRef B(call.typed_tensor(3, "B", K * N, bt), bt);
  return call.run([=, &ops] { ops.gemm(C, A, B, M, N, K, ta, tb, alpha, beta, ta ? M : K, tb ? K : N, N); });
}

// (device, allow): whether the backend's fp32 GEMMs may use TF32 (ignored by the CPU).
Napi::Value SetAllowTf32(const Napi::CallbackInfo& info) {
  OpCall call(info, "setAllowTf32");
  Ops& ops = backend_for(call, 0);
  ops.set_allow_tf32(call.flag(1, "allow"));
  return info.Env().Undefined();
}

// (start): true starts timing every CUDA op; false stops and returns [{op, ms, calls}],
// longest first. Throws in a build without the CUDA backend.
Napi::Value CudaProfile(const Napi::CallbackInfo& info) {
  OpCall call(info, "cudaProfile");
  const bool start = call.flag(0, "start");
#ifdef LORA_TRAIN_HAVE_CUDA
  try {
    if (start) {
      cuda::profile_start();
      return info.Env().Undefined();
    }
    Napi::Array out = Napi::Array::New(info.Env());
    uint32_t i = 0;
    for (const cuda::ProfileEntry& e : cuda::profile_stop()) {
      Napi::Object o = Napi::Object::New(info.Env());
      o.Set("op", e.op);
      o.Set("ms", e.ms);
      o.Set("calls", static_cast<double>(e.calls));
      out.Set(i++, o);
    }
    return out;
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), std::string("cudaProfile: ") + e.what());
  }
#else
  (void)start;
  throw Napi::Error::New(info.Env(), "cudaProfile: this build has no CUDA backend");
#endif
}

// (start): true starts timing every CPU op; false stops and returns
// [{op, shape, ms, calls, flops}], longest first.
Napi::Value CpuProfile(const Napi::CallbackInfo& info) {
  OpCall call(info, "cpuProfile");
  if (call.flag(0, "start")) {
    cpu::profile_start();
    return info.Env().Undefined();
  }
  Napi::Array out = Napi::Array::New(info.Env());
  uint32_t i = 0;
  for (const cpu::ProfileEntry& e : cpu::profile_stop()) {
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("op", e.op);
    o.Set("shape", e.shape);
    o.Set("ms", e.ms);
    o.Set("calls", static_cast<double>(e.calls));
    o.Set("flops", e.flops);
    out.Set(i++, o);
  }
  return out;
}

// (device, dst, dstType, src, srcType, n)
Napi::Value Convert(const Napi::CallbackInfo& info) {
  OpCall call(info, "convert");
  Ops& ops = backend_for(call, 0);
  int64_t n = call.dim(5, "n");
  DType dt = call.dtype(2, "dstType"), st = call.dtype(4, "srcType");
  void* dst = call.typed_tensor(1, "dst", n, dt);
  TensorRef src(call.typed_tensor(3, "src", n, st), st);
  return call.run([=, &ops] { ops.convert(dst, dt, src, n); });
}

// (device, y, x, W, b?, rows, in, out)
Napi::Value LinearForward(const Napi::CallbackInfo& info) {
  OpCall call(info, "linearForward");
  Ops& ops = backend_for(call, 0);
  int64_t rows = call.dim(5, "rows"), in = call.dim(6, "in"), out = call.dim(7, "out");
  float* y = call.f32(1, "y", rows * out);
  const float* x = call.f32(2, "x", rows * in);
  const float* W = call.f32(3, "W", out * in);
  const float* b = call.f32_optional(4, "b", out);
  return call.run([=, &ops] { ops.linear_forward(y, x, W, b, rows, in, out); });
}

// (device, dx?, dW?, db?, dy, x, W, rows, in, out)
Napi::Value LinearBackward(const Napi::CallbackInfo& info) {
  OpCall call(info, "linearBackward");
  Ops& ops = backend_for(call, 0);
  int64_t rows = call.dim(7, "rows"), in = call.dim(8, "in"), out = call.dim(9, "out");
  float* dx = call.f32_optional(1, "dx", rows * in);
  float* dW = call.f32_optional(2, "dW", out * in);
  float* db = call.f32_optional(3, "db", out);
  const float* dy = call.f32(4, "dy", rows * out);
  const float* x = call.f32(5, "x", rows * in);
  const float* W = call.f32(6, "W", out * in);
  return call.run([=, &ops] { ops.linear_backward(dx, dW, db, dy, x, W, rows, in, out, true); });
}

// (device, y, xa, x, W, b?, A, B, scale, rows, in, out, r)
Napi::Value LoraLinearForward(const Napi::CallbackInfo& info) {
  OpCall call(info, "loraLinearForward");
  Ops& ops = backend_for(call, 0);
  float scale = static_cast<float>(call.number(8, "scale"));
  int64_t rows = call.dim(9, "rows"), in = call.dim(10, "in"), out = call.dim(11, "out"), r = call.dim(12, "r");
  float* y = call.f32(1, "y", rows * out);
  float* xa = call.f32(2, "xa", rows * r);
  const float* x = call.f32(3, "x", rows * in);
  const float* W = call.f32(4, "W", out * in);
  const float* b = call.f32_optional(5, "b", out);
  const float* A = call.f32(6, "A", r * in);
  const float* B = call.f32(7, "B", out * r);
  return call.run([=, &ops] { ops.lora_linear_forward(y, xa, x, nullptr, W, b, A, B, scale, rows, in, out, r); });
}

// (device, dx?, dA, dB, dW?, db?, dy, x, xa, W, A, B, scale, rows, in, out, r)
Napi::Value LoraLinearBackward(const Napi::CallbackInfo& info) {
  OpCall call(info, "loraLinearBackward");
  Ops& ops = backend_for(call, 0);
  float scale = static_cast<float>(call.number(12, "scale"));
  int64_t rows = call.dim(13, "rows"), in = call.dim(14, "in"), out = call.dim(15, "out"), r = call.dim(16, "r");
  float* dx = call.f32_optional(1, "dx", rows * in);
  float* dA = call.f32(2, "dA", r * in);
  float* dB = call.f32(3, "dB", out * r);
  float* dW = call.f32_optional(4, "dW", out * in);
  float* db = call.f32_optional(5, "db", out);
  const float* dy = call.f32(6, "dy", rows * out);
  const float* x = call.f32(7, "x", rows * in);
  const float* xa = call.f32(8, "xa", rows * r);
  const float* W = call.f32(9, "W", out * in);
  const float* A = call.f32(10, "A", r * in);
  const float* B = call.f32(11, "B", out * r);
  return call.run([=, &ops] {
    ops.lora_linear_backward(dx, nullptr, dA, dB, dW, db, dy, x, nullptr, xa, W, A, B, scale, rows, in, out, r, true);
  });
}

// (device, o, lse, q, k, v, B, N, M, H, d, scale, compute)
Napi::Value AttentionForward(const Napi::CallbackInfo& info) {
  OpCall call(info, "attentionForward");
  Ops& ops = backend_for(call, 0);
  int64_t B = call.dim(6, "B"), N = call.dim(7, "N"), M = call.dim(8, "M"), H = call.dim(9, "H"), d = call.dim(10, "d");
  float scale = static_cast<float>(call.number(11, "scale"));
  DType compute = call.dtype(12, "compute");
  float* o = call.f32(1, "o", B * N * H * d);
  float* lse = call.f32(2, "lse", B * H * N);
  const float* q = call.f32(3, "q", B * N * H * d);
  const float* k = call.f32(4, "k", B * M * H * d);
  const float* v = call.f32(5, "v", B * M * H * d);
  return call.run([=, &ops] { ops.attention_forward(o, lse, q, k, v, B, N, M, H, d, scale, compute); });
}

// (device, dq, dk, dv, dout, q, k, v, o, lse, B, N, M, H, d, scale, compute)
Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  OpCall call(info, "attentionBackward");
  Ops& ops = backend_for(call, 0);
  int64_t B = call.dim(10, "B"), N = call.dim(11, "N"), M = call.dim(12, "M"), H = call.dim(13, "H"),
          d = call.dim(14, "d");
  float scale = static_cast<float>(call.number(15, "scale"));
  DType compute = call.dtype(16, "compute");
  const int64_t nq = B * N * H * d, nk = B * M * H * d;
  float* dq = call.f32(1, "dq", nq);
  float* dk = call.f32(2, "dk", nk);
  float* dv = call.f32(3, "dv", nk);
  const float* dout = call.f32(4, "dout", nq);
  const float* q = call.f32(5, "q", nq);
  const float* k = call.f32(6, "k", nk);
  const float* v = call.f32(7, "v", nk);
  const float* o = call.f32(8, "o", nq);
  const float* lse = call.f32(9, "lse", B * H * N);
  return call.run(
      [=, &ops] { ops.attention_backward(dq, dk, dv, dout, q, k, v, o, lse, B, N, M, H, d, scale, compute); });
}

// (device, y, mean, rstd, x, rows, C, eps)
Napi::Value LayerNormForward(const Napi::CallbackInfo& info) {
  OpCall call(info, "layerNormForward");
  Ops& ops = backend_for(call, 0);
  int64_t rows = call.dim(5, "rows"), C = call.dim(6, "C");
  float eps = static_cast<float>(call.number(7, "eps"));
  float* y = call.f32(1, "y", rows * C);
  float* mean = call.f32(2, "mean", rows);
  float* rstd = call.f32(3, "rstd", rows);
  const float* x = call.f32(4, "x", rows * C);
  return call.run([=, &ops] { ops.layernorm_forward(y, mean, rstd, x, rows, C, eps); });
}

// (device, dx, dy, x, mean, rstd, rows, C)
Napi::Value LayerNormBackward(const Napi::CallbackInfo& info) {
  OpCall call(info, "layerNormBackward");
  Ops& ops = backend_for(call, 0);
  int64_t rows = call.dim(6, "rows"), C = call.dim(7, "C");
  float* dx = call.f32(1, "dx", rows * C);
  const float* dy = call.f32(2, "dy", rows * C);
  const float* x = call.f32(3, "x", rows * C);
  const float* mean = call.f32(4, "mean", rows);
  const float* rstd = call.f32(5, "rstd", rows);
  return call.run([=, &ops] { ops.layernorm_backward(dx, dy, x, mean, rstd, rows, C); });
}

// Pointwise activations: (device, kind, y, x, n, slope) and (device, kind, dx, dy, x, n, slope).
Napi::Value ActivationForward(const Napi::CallbackInfo& info) {
  OpCall call(info, "activationForward");
  Ops& ops = backend_for(call, 0);
  std::string kind = call.string(1, "kind");
  int64_t n = call.dim(4, "n");
  float slope = static_cast<float>(call.number(5, "slope"));
  float* y = call.f32(2, "y", n);
  const float* x = call.f32(3, "x", n);
  if (kind == "gelu") return call.run([=, &ops] { ops.gelu_forward(y, x, n); });
  if (kind == "silu") return call.run([=, &ops] { ops.silu_forward(y, x, n); });
  if (kind == "leaky_relu") return call.run([=, &ops] { ops.leaky_relu_forward(y, x, slope, n); });
  call.fail_range("'gelu', 'silu' or 'leaky_relu'", "kind", info[1]);
}

Napi::Value ActivationBackward(const Napi::CallbackInfo& info) {
  OpCall call(info, "activationBackward");
  Ops& ops = backend_for(call, 0);
  std::string kind = call.string(1, "kind");
  int64_t n = call.dim(5, "n");
  float slope = static_cast<float>(call.number(6, "slope"));
  float* dx = call.f32(2, "dx", n);
  const float* dy = call.f32(3, "dy", n);
  const float* x = call.f32(4, "x", n);
  if (kind == "gelu") return call.run([=, &ops] { ops.gelu_backward(dx, dy, x, n); });
  if (kind == "silu") return call.run([=, &ops] { ops.silu_backward(dx, dy, x, n); });
  if (kind == "leaky_relu") return call.run([=, &ops] { ops.leaky_relu_backward(dx, dy, x, slope, n); });
  call.fail_range("'gelu', 'silu' or 'leaky_relu'", "kind", info[1]);
}

// (device, y, u, gamma, beta, B, P, C, eps)
Napi::Value GrnForward(const Napi::CallbackInfo& info) {
  OpCall call(info, "grnForward");
  Ops& ops = backend_for(call, 0);
  int64_t B = call.dim(5, "B"), P = call.dim(6, "P"), C = call.dim(7, "C");
  float eps = static_cast<float>(call.number(8, "eps"));
  float* y = call.f32(1, "y", B * P * C);
  const float* u = call.f32(2, "u", B * P * C);
  const float* gamma = call.f32(3, "gamma", C);
  const float* beta = call.f32(4, "beta", C);
  return call.run([=, &ops] { ops.grn_forward(y, u, gamma, beta, B, P, C, eps); });
}

// (device, du?, dgamma?, dbeta?, dy, u, gamma, B, P, C, eps)
Napi::Value GrnBackward(const Napi::CallbackInfo& info) {
  OpCall call(info, "grnBackward");
  Ops& ops = backend_for(call, 0);
  int64_t B = call.dim(7, "B"), P = call.dim(8, "P"), C = call.dim(9, "C");
  float eps = static_cast<float>(call.number(10, "eps"));
  float* du = call.f32_optional(1, "du", B * P * C);
  float* dgamma = call.f32_optional(2, "dgamma", C);
  float* dbeta = call.f32_optional(3, "dbeta", C);
  const float* dy = call.f32(4, "dy", B * P * C);
  const float* u = call.f32(5, "u", B * P * C);
  const float* gamma = call.f32(6, "gamma", C);
  return call.run([=, &ops] { ops.grn_backward(du, dgamma, dbeta, dy, u, gamma, B, P, C, eps); });
}

// (device, y, x, w, bias?, B, H, W, C)
Napi::Value DepthwiseConvForward(const Napi::CallbackInfo& info) {
  OpCall call(info, "depthwiseConv3x3Forward");
  Ops& ops = backend_for(call, 0);
  int64_t B = call.dim(5, "B"), H = call.dim(6, "H"), W = call.dim(7, "W"), C = call.dim(8, "C");
  float* y = call.f32(1, "y", B * H * W * C);
  const float* x = call.f32(2, "x", B * H * W * C);
  const float* w = call.f32(3, "w", C * 9);
  const float* bias = call.f32_optional(4, "bias", C);
  return call.run([=, &ops] { ops.depthwise_conv3x3_forward(y, x, w, bias, B, H, W, C); });
}

// (device, dx?, dw?, dbias?, dy, x, w, B, H, W, C)
Napi::Value DepthwiseConvBackward(const Napi::CallbackInfo& info) {
  OpCall call(info, "depthwiseConv3x3Backward");
  Ops& ops = backend_for(call, 0);
  int64_t B = call.dim(7, "B"), H = call.dim(8, "H"), W = call.dim(9, "W"), C = call.dim(10, "C");
  float* dx = call.f32_optional(1, "dx", B * H * W * C);
  float* dw = call.f32_optional(2, "dw", C * 9);
  float* dbias = call.f32_optional(3, "dbias", C);
  const float* dy = call.f32(4, "dy", B * H * W * C);
  const float* x = call.f32(5, "x", B * H * W * C);
  const float* w = call.f32(6, "w", C * 9);
  return call.run([=, &ops] { ops.depthwise_conv3x3_backward(dx, dw, dbias, dy, x, w, B, H, W, C); });
}

// Stride 1 or 2 and an odd kernel of at most 15, as the image encoder and decoder use them.
void check_kernel(const OpCall& call, const Napi::CallbackInfo& info, size_t k_at) {
  const int64_t k = call.dim(k_at, "k"), stride = call.dim(k_at + 1, "stride");
  if (k % 2 == 0 || k > 15) call.fail_range("an odd kernel size of at most 15", "k", info[k_at]);
  if (stride > 2) call.fail_range("a stride of 1 or 2", "stride", info[k_at + 1]);
}

// (device, y, x, w, bias?, residual?, B, H, W, Cin, Cout, k, stride, silu), channels last
Napi::Value Conv2dForward(const Napi::CallbackInfo& info) {
  OpCall call(info, "conv2dForward");
  Ops& ops = backend_for(call, 0);
  int64_t B = call.dim(6, "B"), H = call.dim(7, "H"), W = call.dim(8, "W"), Cin = call.dim(9, "Cin"),
          Cout = call.dim(10, "Cout"), k = call.dim(11, "k"), stride = call.dim(12, "stride");
  check_kernel(call, info, 11);
  const bool silu = call.flag(13, "silu");
  const int64_t Ho = (H + stride - 1) / stride, Wo = (W + stride - 1) / stride;
  float* y = call.f32(1, "y", B * Ho * Wo * Cout);
  const float* x = call.f32(2, "x", B * H * W * Cin);
  const float* w = call.f32(3, "w", Cout * k * k * Cin);
  const float* bias = call.f32_optional(4, "bias", Cout);
  const float* residual = call.f32_optional(5, "residual", B * Ho * Wo * Cout);
  return call.run([=, &ops] { ops.conv2d_forward(y, x, w, bias, residual, B, H, W, Cin, Cout, k, stride, silu); });
}

// (device, y, x, w, bias?, B, H, W, C, k, stride, replicate, silu), channels last
Napi::Value DepthwiseConvKForward(const Napi::CallbackInfo& info) {
  OpCall call(info, "depthwiseConvForward");
  Ops& ops = backend_for(call, 0);
  int64_t B = call.dim(5, "B"), H = call.dim(6, "H"), W = call.dim(7, "W"), C = call.dim(8, "C"), k = call.dim(9, "k"),
          stride = call.dim(10, "stride");
  check_kernel(call, info, 9);
  const bool replicate = call.flag(11, "replicate"), silu = call.flag(12, "silu");
  const int64_t Ho = (H + stride - 1) / stride, Wo = (W + stride - 1) / stride;
  float* y = call.f32(1, "y", B * Ho * Wo * C);
  const float* x = call.f32(2, "x", B * H * W * C);
  const float* w = call.f32(3, "w", C * k * k);
  const float* bias = call.f32_optional(4, "bias", C);
  return call.run([=, &ops] { ops.depthwise_conv_forward(y, x, w, bias, B, H, W, C, k, stride, replicate, silu); });
}

// (device, y, x, w, bias?, B, Cin, Cout, P)
Napi::Value Conv1x1Forward(const Napi::CallbackInfo& info) {
  OpCall call(info, "conv1x1Forward");
  Ops& ops = backend_for(call, 0);
  int64_t B = call.dim(5, "B"), Cin = call.dim(6, "Cin"), Cout = call.dim(7, "Cout"), P = call.dim(8, "P");
  float* y = call.f32(1, "y", B * Cout * P);
  const float* x = call.f32(2, "x", B * Cin * P);
  const float* w = call.f32(3, "w", Cout * Cin);
  const float* bias = call.f32_optional(4, "bias", Cout);
  return call.run([=, &ops] { ops.conv1x1_forward(y, x, w, bias, B, Cin, Cout, P); });
}

// (device, dx?, dw?, dbias?, dy, x, w, B, Cin, Cout, P)
Napi::Value Conv1x1Backward(const Napi::CallbackInfo& info) {
  OpCall call(info, "conv1x1Backward");
  Ops& ops = backend_for(call, 0);
  int64_t B = call.dim(7, "B"), Cin = call.dim(8, "Cin"), Cout = call.dim(9, "Cout"), P = call.dim(10, "P");
  float* dx = call.f32_optional(1, "dx", B * Cin * P);
  float* dw = call.f32_optional(2, "dw", Cout * Cin);
  float* dbias = call.f32_optional(3, "dbias", Cout);
  const float* dy = call.f32(4, "dy", B * Cout * P);
  const float* x = call.f32(5, "x", B * Cin * P);
  const float* w = call.f32(6, "w", Cout * Cin);
  return call.run([=, &ops] { ops.conv1x1_backward(dx, dw, dbias, dy, x, w, B, Cin, Cout, P); });
}

// (device, dpred?, pred, target, n, gradScale) -> Promise<loss>
Napi::Value MseLoss(const Napi::CallbackInfo& info) {
  OpCall call(info, "mseLoss");
  Ops& ops = backend_for(call, 0);
  int64_t n = call.dim(4, "n");
  float grad_scale = static_cast<float>(call.number(5, "gradScale"));
  float* dpred = call.f32_optional(1, "dpred", n);
  const float* pred = call.f32(2, "pred", n);
  const float* target = call.f32(3, "target", n);
  return call.run_number([=, &ops] { return ops.mse_loss(dpred, pred, target, n, grad_scale); });
}

// (device, params[], expAvgs[], expAvgSqs[], grads[], lr, beta1, beta2, eps, weightDecay, step, gradScale)
Napi::Value AdamW(const Napi::CallbackInfo& info) {
  OpCall call(info, "adamw");
  Ops& ops = backend_for(call, 0);
  Napi::Array params = call.array(1, "params"), m = call.array(2, "expAvgs"), v = call.array(3, "expAvgSqs"),
              g = call.array(4, "grads");
  const uint32_t count = params.Length();
  if (m.Length() != count) call.fail_range("an Array of length " + std::to_string(count), "expAvgs", m);
  if (v.Length() != count) call.fail_range("an Array of length " + std::to_string(count), "expAvgSqs", v);
  if (g.Length() != count) call.fail_range("an Array of length " + std::to_string(count), "grads", g);
  float lr = static_cast<float>(call.number(5, "lr")), beta1 = static_cast<float>(call.number(6, "beta1")),
        beta2 = static_cast<float>(call.number(7, "beta2")), eps = static_cast<float>(call.number(8, "eps")),
        wd = static_cast<float>(call.number(9, "weightDecay"));
  int64_t step = call.dim(10, "step");
  float grad_scale = static_cast<float>(call.number(11, "gradScale"));
  std::vector<Ops::AdamWTensor> tensors(count);
  for (uint32_t i = 0; i < count; ++i) {
    std::string idx = "[" + std::to_string(i) + "]";
    Napi::Value p = params.Get(i);
    if (!p.IsTypedArray() || p.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      call.fail_type("a Float32Array", "params" + idx, p);
    int64_t n = static_cast<int64_t>(p.As<Napi::Float32Array>().ElementLength());
    tensors[i] = {call.f32_value(p, "params" + idx, n, false), call.f32_value(m.Get(i), "expAvgs" + idx, n, false),
                  call.f32_value(v.Get(i), "expAvgSqs" + idx, n, false),
                  call.f32_value(g.Get(i), "grads" + idx, n, false), n};
  }
  return call.run([=, &ops, tensors = std::move(tensors)] {
    ops.adamw(tensors.data(), static_cast<int64_t>(tensors.size()), lr, beta1, beta2, eps, wd, step, grad_scale);
  });
}

// (device, grads[], maxNorm) -> Promise<norm before clipping>; maxNorm 0 only measures.
Napi::Value ClipGradNorm(const Napi::CallbackInfo& info) {
  OpCall call(info, "clipGradNorm");
  Ops& ops = backend_for(call, 0);
  Napi::Array grads = call.array(1, "grads");
  double max_norm = call.number(2, "maxNorm");
  if (max_norm < 0) call.fail_range("a number >= 0", "maxNorm", info[2]);
  std::vector<float*> ptrs;
  std::vector<int64_t> sizes;
  for (uint32_t i = 0; i < grads.Length(); ++i) {
    Napi::Value gv = grads.Get(i);
    std::string name = "grads[" + std::to_string(i) + "]";
    if (!gv.IsTypedArray() || gv.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      call.fail_type("a Float32Array", name, gv);
    int64_t n = static_cast<int64_t>(gv.As<Napi::Float32Array>().ElementLength());
    ptrs.push_back(call.f32_value(gv, name, n, false));
    sizes.push_back(n);
  }
  return call.run_number([=, &ops, ptrs = std::move(ptrs), sizes = std::move(sizes)] {
    return ops.clip_grad_norm(ptrs.data(), sizes.data(), static_cast<int64_t>(ptrs.size()), max_norm);
  });
}

}  // namespace

Ops& backend_for(OpCall& call, size_t i) {
  static cpu::CpuOps cpu_ops;
  std::string name = call.string(i, "device");
  if (name == "cpu") return cpu_ops;
#ifdef LORA_TRAIN_HAVE_CUDA
  if (name == "cuda") {
    static const std::string reason = cuda::unavailable_reason();
    if (!reason.empty()) throw Napi::Error::New(call.env(), "device 'cuda' cannot be used here: " + reason);
    static cuda::CudaOps cuda_ops;
    call.stage_through(cuda_ops);
    return cuda_ops;
  }
  throw Napi::Error::New(call.env(),
                         "device '" + name + "' is not available in this build (built backends: cpu, cuda)");
#else
  throw Napi::Error::New(call.env(), "device '" + name + "' is not available in this build (built backends: cpu)");
#endif
}

}  // namespace lt

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  using namespace lt;
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("setCpuKernels", Napi::Function::New(env, SetCpuKernels));
  exports.Set("measureClockGHz", Napi::Function::New(env, MeasureClockGHz));
  exports.Set("gemm", Napi::Function::New(env, Gemm));
  exports.Set("convert", Napi::Function::New(env, Convert));
  exports.Set("setAllowTf32", Napi::Function::New(env, SetAllowTf32));
  exports.Set("cudaProfile", Napi::Function::New(env, CudaProfile));
  exports.Set("cpuProfile", Napi::Function::New(env, CpuProfile));
  exports.Set("linearForward", Napi::Function::New(env, LinearForward));
  exports.Set("linearBackward", Napi::Function::New(env, LinearBackward));
  exports.Set("loraLinearForward", Napi::Function::New(env, LoraLinearForward));
  exports.Set("loraLinearBackward", Napi::Function::New(env, LoraLinearBackward));
  exports.Set("attentionForward", Napi::Function::New(env, AttentionForward));
  exports.Set("attentionBackward", Napi::Function::New(env, AttentionBackward));
  exports.Set("layerNormForward", Napi::Function::New(env, LayerNormForward));
  exports.Set("layerNormBackward", Napi::Function::New(env, LayerNormBackward));
  exports.Set("activationForward", Napi::Function::New(env, ActivationForward));
  exports.Set("activationBackward", Napi::Function::New(env, ActivationBackward));
  exports.Set("grnForward", Napi::Function::New(env, GrnForward));
  exports.Set("grnBackward", Napi::Function::New(env, GrnBackward));
  exports.Set("depthwiseConv3x3Forward", Napi::Function::New(env, DepthwiseConvForward));
  exports.Set("depthwiseConv3x3Backward", Napi::Function::New(env, DepthwiseConvBackward));
  exports.Set("conv1x1Forward", Napi::Function::New(env, Conv1x1Forward));
  exports.Set("conv2dForward", Napi::Function::New(env, Conv2dForward));
  exports.Set("depthwiseConvForward", Napi::Function::New(env, DepthwiseConvKForward));
  exports.Set("conv1x1Backward", Napi::Function::New(env, Conv1x1Backward));
  exports.Set("mseLoss", Napi::Function::New(env, MseLoss));
  exports.Set("adamw", Napi::Function::New(env, AdamW));
  exports.Set("clipGradNorm", Napi::Function::New(env, ClipGradNorm));
  register_prior(env, exports);
  register_collective(env, exports);
  register_encoders(env, exports);
  register_decoders(env, exports);
  register_file_lock(env, exports);
  return exports;
}

NODE_API_MODULE(lora_train, InitAddon)
