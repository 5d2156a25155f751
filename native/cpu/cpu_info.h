// What the benchmark needs to estimate the machine's fp32 peak: the CPU's identity and its
// clock as it actually runs (virtual machines report a nominal MHz that boosting exceeds).
#pragma once
#include <string>

namespace lt::cpu {

struct CpuIdentity {
  std::string vendor;  // "AuthenticAMD", "GenuineIntel", ... or "" off x86
  std::string brand;
  int family = 0, model = 0;
};

CpuIdentity cpu_identity();

// Clock in GHz measured with a chain of dependent integer adds (one cycle each) on the calling
// thread, over about `seconds`; 0 where the measurement is not implemented.
double measure_clock_ghz(double seconds);

}  // namespace lt::cpu
