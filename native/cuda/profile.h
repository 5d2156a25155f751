// Per-op GPU time of the CUDA backend, to see what a training step spends its time on
// (tests/gpu-check.ts prints it). Off unless started: then each outermost op call records a
// pair of CUDA events on the default stream, summed per op when stopped.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lt::cuda {

struct ProfileEntry {
  std::string op;
  double ms;
  int64_t calls;
};

void profile_start();
// Waits for the device, then returns each op's summed time, longest first.
std::vector<ProfileEntry> profile_stop();

class ProfileScope {
 public:
  explicit ProfileScope(const char* op);
  ~ProfileScope();
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  const char* op_;
  bool outermost_ = false;
  void* start_ = nullptr;  // cudaEvent_t
};

#define LT_PROFILE(op) ::lt::cuda::ProfileScope lt_profile_scope_(op)

}  // namespace lt::cuda
