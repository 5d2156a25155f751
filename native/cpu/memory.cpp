// Host memory for the CPU backend's model buffers.
#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <unordered_map>
#include <utility>

#include "cpu_ops.h"
#include "kernels.h"
#include "profile.h"
#include "thread_pool.h"

namespace lt::cpu {

namespace {

// Buffers of at least this size are mapped on their own, 2 MiB aligned, and offered to the
// kernel as huge pages: the 1B prior's 4 GB of weights then take thousands of page faults to
// fill instead of a million, and its GEMMs fewer TLB misses.
constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kMappedFrom = 2 * kHugePage;

struct Mapping {
  void* base;
  size_t length;
};
std::mutex mappings_mutex;
std::unordered_map<void*, Mapping> mappings;  // in use, by the pointer handed out
// Released mappings kept for the next allocation of the same length (a forward's scratch
// buffers come and go with every call; mapping them afresh would clear their huge pages each
// time), up to kIdleBytes in all.
std::multimap<size_t, std::pair<void*, Mapping>> idle;
size_t idle_bytes = 0;
constexpr size_t kIdleBytes = size_t{1} << 30;

void* map_huge(size_t bytes) {
  const size_t length = (bytes + kHugePage - 1) / kHugePage * kHugePage + kHugePage;
  std::lock_guard<std::mutex> lock(mappings_mutex);
  auto reuse = idle.find(length);
  if (reuse != idle.end()) {
    auto [p, m] = reuse->second;
    idle.erase(reuse);
    idle_bytes -= m.length;
    mappings.emplace(p, m);
    return p;
  }
  void* base = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) throw std::bad_alloc();
  const uintptr_t at = (reinterpret_cast<uintptr_t>(base) + kHugePage - 1) / kHugePage * kHugePage;
  void* p = reinterpret_cast<void*>(at);
  madvise(p, length - (at - reinterpret_cast<uintptr_t>(base)), MADV_HUGEPAGE);  // advice: failure is fine
  mappings.emplace(p, Mapping{base, length});
  return p;
}

// Whether p was mapped by map_huge (then it is released here).
bool unmap_huge(void* p) {
  std::lock_guard<std::mutex> lock(mappings_mutex);
  auto it = mappings.find(p);
  if (it == mappings.end()) return false;
  const Mapping m = it->second;
  mappings.erase(it);
  if (idle_bytes + m.length <= kIdleBytes) {
    idle.emplace(m.length, std::make_pair(p, m));
    idle_bytes += m.length;
  } else {
    munmap(m.base, m.length);
  }
  return true;
}

}  // namespace

float* CpuOps::alloc(int64_t n) {
  LT_CPU_PROFILE("alloc");
  size_t bytes = ((static_cast<size_t>(n > 0 ? n : 1) * sizeof(float) + 63) / 64) * 64;
  if (bytes >= kMappedFrom) return static_cast<float*>(map_huge(bytes));
  void* p = std::aligned_alloc(64, bytes);
  if (!p) throw std::bad_alloc();
  return static_cast<float*>(p);
}

void CpuOps::release(float* p) {
  LT_CPU_PROFILE("release");
  if (!unmap_huge(p)) std::free(p);
}

void CpuOps::upload_bytes(void* dst, const void* host_src, int64_t bytes) {
  LT_CPU_PROFILE("upload_bytes");
  std::memcpy(dst, host_src, static_cast<size_t>(bytes));
}

void CpuOps::download_bytes(void* host_dst, const void* src, int64_t bytes) {
  LT_CPU_PROFILE("download_bytes");
  std::memcpy(host_dst, src, static_cast<size_t>(bytes));
}

void CpuOps::zero(float* x, int64_t n) {
  LT_CPU_PROFILE("zero");
  parallel_range(n, 1 << 16,
                 [&](int64_t i0, int64_t i1) { std::memset(x + i0, 0, static_cast<size_t>(i1 - i0) * sizeof(float)); });
}

void CpuOps::axpy(float* y, const float* x, float alpha, int64_t n) {
  LT_CPU_PROFILE("axpy");
  parallel_range(n, 1 << 14, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) y[i] += alpha * x[i];
  });
}

}  // namespace lt::cpu

namespace lt::cpu {

void CpuOps::convert(void* dst, DType dst_type, TensorRef src, int64_t n) {
  LT_CPU_PROFILE("convert");
  const TensorOut out(dst, dst_type);
  parallel_range(n, 1 << 14, [&](int64_t i0, int64_t i1) {
    const int64_t size = dtype_size(dst_type);
    if (src.type == dst_type)
      return std::memmove(static_cast<char*>(dst) + i0 * size, src.from(i0).data, (i1 - i0) * size), void();
    // Mixed precision rounds every saved activation (by the kernel set, for bf16) ...
    if (src.type == DType::f32) return store_values(out, i0, src.f32() + i0, i1 - i0);
    if (src.type == DType::bf16 && dst_type == DType::f32)  // and widens them back: a shift
      return active_kernels().from_bf16(static_cast<float*>(dst) + i0, src.lowp() + i0, i1 - i0);
    for (int64_t i = i0; i < i1; ++i) out.set(i, src.at(i));
  });
}

}  // namespace lt::cpu
