// Shared helpers for the CUDA kernels: error checks that throw (never abort), launch sizes,
// block reductions.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "../dtype.h"
#include "../rng.h"

namespace lt::cuda {

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA: ") + what + ": " + cudaGetErrorString(e));
}
#define LT_CUDA(call) ::lt::cuda::check((call), #call)
// After a launch: catches bad configurations at once and kernel faults at the next sync.
#define LT_LAUNCHED(name) ::lt::cuda::check(cudaGetLastError(), name)

// A temporary device buffer from the stream-ordered pool, released when the scope ends; the
// kernels using it are queued on the same stream, so freeing at scope end is safe.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() {
    if (p_) cudaFreeAsync(p_, 0);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* reserve(int64_t bytes) {
    static const bool pool_kept = keep_pool();
    (void)pool_kept;
    if (p_) cudaFreeAsync(p_, 0);
    p_ = nullptr;
    LT_CUDA(cudaMallocAsync(&p_, static_cast<size_t>(bytes > 0 ? bytes : 1), 0));
    return p_;
  }
  float* floats(int64_t n) { return static_cast<float*>(reserve(n * 4)); }
  void* data() const { return p_; }

 private:
  // The pool would hand its memory back to the driver at every synchronisation, and a step
  // synchronises (the loss, the grad norm): keep it, so each step's temporaries are reused.
  // (CudaOps::alloc trims it when a plain allocation runs out.)
  static bool keep_pool() {
    int device = 0;
    cudaMemPool_t pool;
    uint64_t keep = UINT64_MAX;
    if (cudaGetDevice(&device) == cudaSuccess && cudaDeviceGetDefaultMemPool(&pool, device) == cudaSuccess)
      cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
    cudaGetLastError();  // a failure here only costs speed: do not leave it for the next check
    return true;
  }
  void* p_ = nullptr;
};

// x (n elements) as type `to`: x itself when it is stored so, else a copy made in buf
// (memory.cu).
TensorRef converted(DeviceBuffer& buf, TensorRef x, DType to, int64_t n);

constexpr int kThreads = 256;
inline unsigned blocks_for(int64_t n, int threads = kThreads) {
  int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 65535LL * 1024 ? 65535LL * 1024 : b));
}

// Launches over (row, column tile, image): blockIdx.x a row, blockIdx.y a tile of columns,
// blockIdx.z an image, so that no thread divides a 64-bit flat index. A block holds the row's
// columns rounded up to whole warps, at most kThreads.
inline unsigned column_threads(int64_t cols) {
  return cols >= kThreads ? kThreads : static_cast<unsigned>((cols + 31) / 32 * 32);
}
inline dim3 row_column_grid(int64_t images, int64_t rows, int64_t cols) {
  const unsigned threads = column_threads(cols);
  return dim3(static_cast<unsigned>(rows), static_cast<unsigned>((cols + threads - 1) / threads),
              static_cast<unsigned>(images));
}

// Grid-stride loop over [0, n).
#define LT_FOR(i, n) \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

// Sum over a block of up to 1024 threads, a multiple of 32 (full-warp shuffles); every thread
// gets the result. Safe to call several times in one kernel (it synchronises before reusing
// its shared memory).
template <typename T>
__device__ inline T block_reduce_sum(T v) {
  __shared__ T partial[32];
  __shared__ T total;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  v = threadIdx.x < warps ? partial[threadIdx.x] : T(0);
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x == 0) total = v;
  __syncthreads();
  return total;
}
__device__ inline float block_sum(float v) { return block_reduce_sum(v); }
__device__ inline double block_sum_double(double v) { return block_reduce_sum(v); }

}  // namespace lt::cuda
