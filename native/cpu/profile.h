// Per-op wall time of the CPU backend, to see where a training step spends its time against the
// machine's peak (the bench prints it). Off unless started: then each outermost op call is
// timed and keyed by op and shape, and the GEMM and attention work done inside it is counted,
// so every entry carries its floating-point rate.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace lt::cpu {

struct ProfileEntry {
  std::string op;
  std::string shape;  // "" for ops keyed by name alone
  double ms;
  int64_t calls;
  double flops;  // counted inside the op: 2 per multiply-add of its GEMMs and attention
};

void profile_start();
// Returns each op's summed time, longest first, and stops.
std::vector<ProfileEntry> profile_stop();
// Adds work to the outermost op running on this thread, if it is being timed.
void profile_count_flops(double flops);

class ProfileScope {
 public:
  explicit ProfileScope(const char* op, std::initializer_list<int64_t> shape = {});
  ~ProfileScope();
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  const char* op_;
  std::string shape_;
  bool outermost_ = false;
  double start_ms_ = 0.0;
  double flops_ = 0.0;
};

}  // namespace lt::cpu

// Times the enclosing op; the braces list its shape (sizes joined by 'x' in the key).
#define LT_CPU_PROFILE(...) ::lt::cpu::ProfileScope lt_profile_scope_(__VA_ARGS__)
