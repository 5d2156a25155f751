#include "kernels.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <stdexcept>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif

namespace lt::cpu {
namespace {

#if defined(__x86_64__) || defined(_M_X64)
uint64_t xgetbv0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

bool cpu_has_avx2_fma() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28);
  if (!(fma && osxsave && avx)) return false;
  if ((xgetbv0() & 0x6) != 0x6) return false;  // OS saves XMM and YMM state
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  return b & (1u << 5);
}

bool cpu_has_avx512() {
  if (!cpu_has_avx2_fma()) return false;
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  bool f = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30), vl = b & (1u << 31);
  // OS saves opmask and the upper ZMM state.
  return f && dq && bw && vl && (xgetbv0() & 0xe6) == 0xe6;
}
#endif

const KernelSet* best_kernels() {
#if defined(__x86_64__) || defined(_M_X64)
  if (cpu_has_avx512()) return &kAvx512Kernels;
  if (cpu_has_avx2_fma()) return &kAvx2Kernels;
#endif
  return &kGenericKernels;
}

const KernelSet* find_supported(const std::string& name) {
  for (const auto& supported : supported_kernel_sets()) {
    if (supported != name) continue;
#if defined(__x86_64__) || defined(_M_X64)
    if (name == "avx512") return &kAvx512Kernels;
    if (name == "avx2") return &kAvx2Kernels;
#endif
    return &kGenericKernels;
  }
  return nullptr;
}

const KernelSet* initial_kernels() {
  const char* forced = std::getenv("LORA_TRAIN_CPU_KERNEL");
  if (forced && *forced) {
    // An impossible request falls back to the best set; the JS loader turns the mismatch
    // (info() names the active set) into an error.
    if (const KernelSet* k = find_supported(forced)) return k;
  }
  return best_kernels();
}

std::atomic<const KernelSet*>& active() {
  static std::atomic<const KernelSet*> current{initial_kernels()};
  return current;
}

}  // namespace

std::vector<std::string> supported_kernel_sets() {
  std::vector<std::string> names;
#if defined(__x86_64__) || defined(_M_X64)
  if (cpu_has_avx512()) names.push_back("avx512");
  if (cpu_has_avx2_fma()) names.push_back("avx2");
#endif
  names.push_back("generic");
  return names;
}

const KernelSet& active_kernels() { return *active().load(std::memory_order_acquire); }

void set_active_kernels(const std::string& name) {
  const KernelSet* k = find_supported(name);
  if (!k) {
    std::string list;
    for (const auto& s : supported_kernel_sets()) list += (list.empty() ? "" : ", ") + s;
    throw std::invalid_argument("CPU kernel set '" + name + "' is not available on this CPU (available: " + list + ")");
  }
  active().store(k, std::memory_order_release);
}

const float* load_values(TensorRef x, int64_t at, int64_t n, float* buffer) {
  if (x.type == DType::f32) return x.f32() + at;
  const uint16_t* src = x.lowp() + at;
  if (x.type == DType::bf16)
    active_kernels().from_bf16(buffer, src, n);
  else
    for (int64_t i = 0; i < n; ++i) buffer[i] = lowp_to_f32(src[i], x.type);
  return buffer;
}

void store_values(TensorOut y, int64_t at, const float* values, int64_t n) {
  if (y.type == DType::f32) return std::copy(values, values + n, y.f32() + at), void();
  if (y.type == DType::bf16) return active_kernels().to_bf16(static_cast<uint16_t*>(y.data) + at, values, n);
  for (int64_t i = 0; i < n; ++i) y.set(at + i, values[i]);
}

}  // namespace lt::cpu
