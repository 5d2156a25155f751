// The CPU backend: the reference implementation of every op in ops.h. Each op family lives in
// its own file (memory.cpp, gemm.cpp, linear.cpp, attention.cpp, norm_act.cpp, conv.cpp,
// elementwise.cpp, optim.cpp).
#pragma once
#include "../ops.h"

namespace lt::cpu {

class CpuOps final : public Ops {
 public:
  std::string name() const override { return "cpu"; }
#include "../backend_ops.inc"
};

}  // namespace lt::cpu
