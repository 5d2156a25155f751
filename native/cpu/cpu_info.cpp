#include "cpu_info.h"

#include <chrono>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif

namespace lt::cpu {

CpuIdentity cpu_identity() {
  CpuIdentity id;
#if defined(__x86_64__) || defined(_M_X64)
  unsigned a, b, c, d;
  if (__get_cpuid(0, &a, &b, &c, &d)) {
    char vendor[13] = {};
    std::memcpy(vendor, &b, 4);
    std::memcpy(vendor + 4, &d, 4);
    std::memcpy(vendor + 8, &c, 4);
    id.vendor = vendor;
  }
  if (__get_cpuid(1, &a, &b, &c, &d)) {
    int base_family = (a >> 8) & 0xf, base_model = (a >> 4) & 0xf;
    id.family = base_family == 0xf ? base_family + ((a >> 20) & 0xff) : base_family;
    id.model = (base_family == 0x6 || base_family == 0xf) ? (((a >> 16) & 0xf) << 4) + base_model : base_model;
  }
  char brand[49] = {};
  for (unsigned leaf = 0; leaf < 3; ++leaf)
    if (__get_cpuid(0x80000002 + leaf, &a, &b, &c, &d)) {
      unsigned regs[4] = {a, b, c, d};
      std::memcpy(brand + 16 * leaf, regs, 16);
    }
  id.brand = brand;
  while (!id.brand.empty() && id.brand.back() == ' ') id.brand.pop_back();
#endif
  return id;
}

double measure_clock_ghz(double seconds) {
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
  using clock = std::chrono::steady_clock;
  constexpr long kAddsPerRound = 1000;  // 100 x 10 dependent adds below
  double best = 0.0;
  auto deadline = clock::now() + std::chrono::duration<double>(seconds);
  while (clock::now() < deadline) {
    long rounds = 20000;
    auto t0 = clock::now();
    unsigned long x = 0, one = 1;
    for (long r = 0; r < rounds; ++r) {
      // 1000 register adds, each waiting on the previous one: 1000 cycles per round. (Adds of
      // an immediate are not used: newer Intel cores fold chains of them at rename.)
      for (int i = 0; i < 100; ++i)
        __asm__ volatile(
            "add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\t"
            "add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0"
            : "+r"(x)
            : "r"(one));
    }
    double elapsed = std::chrono::duration<double>(clock::now() - t0).count();
    double ghz = static_cast<double>(rounds) * kAddsPerRound / elapsed / 1e9;
    if (ghz > best) best = ghz;
  }
  return best;
#else
  (void)seconds;
  return 0.0;
#endif
}

}  // namespace lt::cpu
