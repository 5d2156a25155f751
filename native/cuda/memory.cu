// Device memory, and whether a device can be used at all.
#include <dlfcn.h>

#include "common.cuh"
#include "cuda_ops.h"

namespace lt::cuda {

std::string unavailable_reason() {
  // Without a driver, cudart only says "driver version is insufficient"; name the real cause.
  if (void* driver = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL)) dlclose(driver);
  else return "no NVIDIA driver (libcuda.so.1 is not installed)";
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls are not poisoned
    return cudaGetErrorString(e);
  }
  return count > 0 ? "" : "no CUDA device";
}

float* CudaOps::alloc(int64_t n) {
  void* p = nullptr;
  LT_CUDA(cudaMalloc(&p, static_cast<size_t>(n > 0 ? n : 1) * sizeof(float)));
  return static_cast<float*>(p);
}

void CudaOps::release(float* p) { cudaFree(p); }

void CudaOps::upload(float* dst, const float* host_src, int64_t n) {
  LT_CUDA(cudaMemcpy(dst, host_src, static_cast<size_t>(n) * sizeof(float), cudaMemcpyHostToDevice));
}

void CudaOps::download(float* host_dst, const float* src, int64_t n) {
  LT_CUDA(cudaMemcpy(host_dst, src, static_cast<size_t>(n) * sizeof(float), cudaMemcpyDeviceToHost));
}

void CudaOps::zero(float* x, int64_t n) { LT_CUDA(cudaMemset(x, 0, static_cast<size_t>(n) * sizeof(float))); }

__global__ void axpy_kernel(float* y, const float* x, float alpha, int64_t n) {
  LT_FOR(i, n) y[i] += alpha * x[i];
}

void CudaOps::axpy(float* y, const float* x, float alpha, int64_t n) {
  axpy_kernel<<<blocks_for(n), kThreads>>>(y, x, alpha, n);
  LT_LAUNCHED("axpy");
}

}  // namespace lt::cuda
