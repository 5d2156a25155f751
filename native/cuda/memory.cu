// Device memory, and whether a device can be used at all.
#include <dlfcn.h>

#include <cstdio>

#include "common.cuh"
#include "cublaslt.h"
#include "cuda_ops.h"
#include "profile.h"

namespace lt::cuda {

std::string unavailable_reason() {
  // Without a driver, cudart only says "driver version is insufficient"; name the real cause.
  if (void* driver = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL))
    dlclose(driver);
  else
    return "no NVIDIA driver (libcuda.so.1 is not installed)";
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls are not poisoned
    return cudaGetErrorString(e);
  }
  if (count < 1) return "no CUDA device";
  int device = 0, major = 0, minor = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    cudaGetLastError();
    return "cannot read the GPU's compute capability";
  }
  if (major < 8)
    return "the GPU has compute capability " + std::to_string(major) + "." + std::to_string(minor) +
           "; lora-train's CUDA backend needs 8.0 or newer (bf16 tensor cores)";
  std::string why;
  cublaslt(&why);
  return why;
}

std::string device_description() {
  int device = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&device) != cudaSuccess || cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
    cudaGetLastError();
    return "";
  }
  char memory[32];
  std::snprintf(memory, sizeof(memory), "%.1f GiB", static_cast<double>(prop.totalGlobalMem) / (1u << 30));
  return std::string(prop.name) + ", compute capability " + std::to_string(prop.major) + "." +
         std::to_string(prop.minor) + ", " + memory;
}

float* CudaOps::alloc(int64_t n) {
  LT_PROFILE("alloc");
  void* p = nullptr;
  const size_t bytes = static_cast<size_t>(n > 0 ? n : 1) * sizeof(float);
  if (cudaMalloc(&p, bytes) == cudaErrorMemoryAllocation) {
    // The stream-ordered pool keeps what it held (common.cuh): give it back and try once more.
    cudaGetLastError();
    int device = 0;
    cudaMemPool_t pool;
    if (cudaDeviceSynchronize() == cudaSuccess && cudaGetDevice(&device) == cudaSuccess &&
        cudaDeviceGetDefaultMemPool(&pool, device) == cudaSuccess)
      cudaMemPoolTrimTo(pool, 0);
    cudaGetLastError();
    LT_CUDA(cudaMalloc(&p, bytes));
  }
  return static_cast<float*>(p);
}

void CudaOps::release(float* p) { cudaFree(p); }

void CudaOps::upload_bytes(void* dst, const void* host_src, int64_t bytes) {
  LT_PROFILE("upload_bytes");
  LT_CUDA(cudaMemcpy(dst, host_src, static_cast<size_t>(bytes), cudaMemcpyHostToDevice));
}

void CudaOps::download_bytes(void* host_dst, const void* src, int64_t bytes) {
  LT_PROFILE("download_bytes");
  LT_CUDA(cudaMemcpy(host_dst, src, static_cast<size_t>(bytes), cudaMemcpyDeviceToHost));
}

void CudaOps::zero(float* x, int64_t n) {
  LT_PROFILE("zero");
  LT_CUDA(cudaMemset(x, 0, static_cast<size_t>(n) * sizeof(float)));
}

__global__ void axpy_kernel(float* y, const float* x, float alpha, int64_t n) { LT_FOR(i, n) y[i] += alpha * x[i]; }

void CudaOps::axpy(float* y, const float* x, float alpha, int64_t n) {
  LT_PROFILE("axpy");
  axpy_kernel<<<blocks_for(n), kThreads>>>(y, x, alpha, n);
  LT_LAUNCHED("axpy");
}

__global__ void convert_kernel(TensorOut dst, TensorRef src, int64_t n) { LT_FOR(i, n) dst.set(i, src.at(i)); }

void convert_device(void* dst, DType dst_type, TensorRef src, int64_t n) {
  if (n <= 0) return;
  convert_kernel<<<blocks_for(n), kThreads>>>(TensorOut(dst, dst_type), src, n);
  LT_LAUNCHED("convert");
}

TensorRef converted(DeviceBuffer& buf, TensorRef x, DType to, int64_t n) {
  if (x.type == to) return x;
  void* p = buf.reserve(n * dtype_size(to));
  convert_device(p, to, x, n);
  return {p, to};
}

void CudaOps::convert(void* dst, DType dst_type, TensorRef src, int64_t n) {
  LT_PROFILE("convert");
  convert_device(dst, dst_type, src, n);
}

}  // namespace lt::cuda
