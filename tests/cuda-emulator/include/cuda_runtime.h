// The CUDA runtime as the lora-train test emulator provides it: the subset of the runtime API
// and device built-ins that native/cuda uses, run on the CPU. Each CUDA thread of a block is a
// fiber (runtime.cpp), so __syncthreads, __syncwarp and warp shuffles have their real
// semantics, and a kernel that leaves out a needed synchronisation or lets a warp diverge at
// one gets an error or wrong numbers here as it would on a GPU. Kernels run synchronously at
// launch; device memory is host memory.
//
// Only for tests: tests/cuda-emulator/translate-cu.mjs rewrites a .cu file's launches
// (kernel<<<...>>>(...)), shared memory and __launch_bounds__ into C++ that includes this
// header first.
#pragma once
#include <dlfcn.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

// CUDA's math API has isnan and isinf at global scope, as C's <math.h> has them.
using std::isinf;
using std::isnan;

// ---- qualifiers --------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __align__(n) alignas(n)
// One block runs at a time and its threads are fibers of one OS thread, so a function-local
// static is exactly one block's shared memory. translate-cu.mjs registers each one
// (lt_emu::register_shared), and the emulator fills them with a poison pattern before every
// block, as it fills dynamic shared memory.
#define __shared__ static

// ---- vector types ------------------------------------------------------------------------
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}  // NOLINT: implicit as CUDA's
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) ushort4 {
  unsigned short x, y, z, w;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

// ---- errors, streams, events, devices ------------------------------------------------------
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchFailure = 719,
};
using cudaStream_t = struct EmuStream*;
using cudaEvent_t = struct EmuEvent*;
using cudaMemPool_t = struct EmuMemPool*;
enum cudaMemcpyKind {
  cudaMemcpyHostToHost,
  cudaMemcpyHostToDevice,
  cudaMemcpyDeviceToHost,
  cudaMemcpyDeviceToDevice,
  cudaMemcpyDefault
};
enum cudaDeviceAttr {
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrComputeCapabilityMinor = 76
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaMemPoolAttr { cudaMemPoolAttrReleaseThreshold = 4 };
struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  int major, minor;
  int multiProcessorCount;
};
enum cudaDataType_t { CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14 };

const char* cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError();
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaMalloc(void** p, size_t bytes);
cudaError_t cudaFree(void* p);
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t stream);
cudaError_t cudaFreeAsync(void* p, cudaStream_t stream);
template <typename T>
cudaError_t cudaMalloc(T** p, size_t bytes) {  // as the CUDA runtime's own overload
  return cudaMalloc(reinterpret_cast<void**>(p), bytes);
}
template <typename T>
cudaError_t cudaMallocAsync(T** p, size_t bytes, cudaStream_t stream) {
  return cudaMallocAsync(reinterpret_cast<void**>(p), bytes, stream);
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream = nullptr);
cudaError_t cudaMemset(void* p, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t stream = nullptr);
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int device);
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value);
cudaError_t cudaMemPoolTrimTo(cudaMemPool_t pool, size_t keep);
cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t stream = nullptr);
// Kernels run to completion at launch here, so streams order nothing: a stream is a token.
constexpr unsigned cudaStreamNonBlocking = 1, cudaEventDisableTiming = 2;
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned flags);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t stop);

namespace lt_emu {
cudaError_t set_function_attribute(const void* kernel, cudaFuncAttribute attr, int value);
}
template <typename Kernel>
cudaError_t cudaFuncSetAttribute(Kernel* kernel, cudaFuncAttribute attr, int value) {
  return lt_emu::set_function_attribute(reinterpret_cast<const void*>(kernel), attr, value);
}

// The emulator is the driver and cuBLASLt too: opening libcuda or libcublasLt gives the
// emulator's own handle (its cublasLt* symbols are in cublaslt.cpp); other names open as usual.
namespace lt_emu {
void* open_library(const char* file, int flags);
}
#define dlopen(file, flags) ::lt_emu::open_library(file, flags)

namespace lt_emu {
// While one exists, device memory is readable and writable by the emulator's own code (runtime.cpp).
struct DeviceAccess {
  DeviceAccess();
  ~DeviceAccess();
  DeviceAccess(const DeviceAccess&) = delete;
  DeviceAccess& operator=(const DeviceAccess&) = delete;
};
}  // namespace lt_emu

// ---- device built-ins -----------------------------------------------------------------------
namespace lt_emu {

// The CUDA thread a fiber is running.
struct ThreadContext {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
};
extern thread_local ThreadContext* current;

void sync_block();
// Waits until all 32 lanes of the calling warp reach their next warp-synchronous call; with a
// value (at most kMaxExchangeBytes), every lane's value is then readable by exchanged_value.
constexpr size_t kMaxExchangeBytes = 48;
void sync_warp(const void* value = nullptr, size_t bytes = 0);
// The value `lane` of this warp gave to the warp-synchronous call that just finished.
void exchanged_value(int lane, void* out, size_t bytes);
unsigned char* dynamic_shared_memory();
// Throws unless [p, p + bytes) lies in the running block's dynamic shared memory.
void check_in_shared(const void* p, size_t bytes, const char* what);
// Records a __shared__ variable (poisoned now and before every block); true, for a static's
// initialiser.
bool register_shared(void* p, size_t bytes);
template <typename T>
T* dynamic_shared() {
  return reinterpret_cast<T*>(dynamic_shared_memory());
}

}  // namespace lt_emu

#define threadIdx (::lt_emu::current->thread_idx)
#define blockIdx (::lt_emu::current->block_idx)
#define blockDim (::lt_emu::current->block_dim)
#define gridDim (::lt_emu::current->grid_dim)

namespace lt_emu {
// A thread's index in its block, x fastest (the order of its warps' lanes).
inline int linear_thread_id(const ThreadContext& t) {
  return static_cast<int>(t.thread_idx.x + t.block_dim.x * (t.thread_idx.y + t.block_dim.y * t.thread_idx.z));
}
// The calling thread's lane in its warp.
inline int lane_id() { return linear_thread_id(*current) % 32; }

// A kernel declared __launch_bounds__(max_threads) launched with a larger block fails, as a
// GPU refuses the launch.
inline void check_launch_bound(unsigned max_threads) {
  if (blockDim.x * blockDim.y * blockDim.z > max_threads)
    throw std::logic_error("a block of " + std::to_string(blockDim.x * blockDim.y * blockDim.z) +
                           " threads for a kernel declared __launch_bounds__(" + std::to_string(max_threads) + ")");
}
}  // namespace lt_emu

inline void __syncthreads() { lt_emu::sync_block(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  if (mask != 0xffffffffu) throw std::logic_error("cuda emulator: __syncwarp with a partial mask");
  lt_emu::sync_warp();
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask) {
  if (mask != 0xffffffffu) throw std::logic_error("cuda emulator: __shfl_xor_sync with a partial mask");
  lt_emu::sync_warp(&value, sizeof(T));
  T other;
  lt_emu::exchanged_value(lt_emu::lane_id() ^ lane_mask, &other, sizeof(T));
  return other;
}

// Fibers of one OS thread never interleave inside an expression: a plain update is atomic.
template <typename T>
T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}

inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

// ---- launches ------------------------------------------------------------------------------
namespace lt_emu {

struct LaunchConfig {
  const void* kernel;
  dim3 grid, block;
  size_t shared_bytes;
};
// Runs body once per thread of every block (blocks one after another); errors of the
// configuration or of the kernel become the next cudaGetLastError's.
void run_grid(const LaunchConfig& config, void (*body)(void*), void* context);

// Whether p is null or points into memory that cudaMalloc returned (its end included).
bool is_device_pointer(const void* p);
// Whether [p, p + bytes) lies inside one block that cudaMalloc returned.
bool is_device_span(const void* p, size_t bytes);
// A launch whose argument `index` (from 0) points outside device memory: the kernel would
// fault on a GPU reading it, so the launch fails as that kernel would.
void fail_host_pointer(int index);

template <typename T, typename = void>
struct HasData : std::false_type {};
template <typename T>
struct HasData<T, std::void_t<decltype(static_cast<const void*>(std::declval<const T&>().data))>> : std::true_type {};
// The memory a kernel argument points to: a pointer, or a tensor's data (TensorRef/TensorOut).
template <typename T>
const void* pointer_argument(const T& a) {
  if constexpr (std::is_pointer_v<T>)
    return a;
  else if constexpr (HasData<T>::value)
    return a.data;
  else
    return nullptr;
}

// kernel<<<grid, block, shared, stream>>>(args...) becomes
// launch(&kernel, grid, block, shared, stream)([](auto... a) { kernel(a...); }, args...):
// the arguments are evaluated once, as for a launch, and every thread gets its own copy.
struct Launch {
  LaunchConfig config;
  template <typename Call, typename... Args>
  void operator()(Call call, Args... args) const {
    struct Context {
      Call call;
      std::tuple<Args...> args;
    } context{call, std::tuple<Args...>(args...)};
    int index = 0, host = -1;
    ((host < 0 && !is_device_pointer(pointer_argument(args)) ? host = index : 0, ++index), ...);
    if (host >= 0) return fail_host_pointer(host);
    run_grid(
        config,
        [](void* p) {
          auto* c = static_cast<Context*>(p);
          auto copy = c->args;
          std::apply(c->call, copy);
        },
        &context);
  }
};
template <typename Kernel>
Launch launch(Kernel* kernel, dim3 grid, dim3 block, size_t shared_bytes = 0, cudaStream_t = nullptr) {
  return Launch{{reinterpret_cast<const void*>(kernel), grid, block, shared_bytes}};
}

}  // namespace lt_emu
