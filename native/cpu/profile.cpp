#include "profile.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <utility>

namespace lt::cpu {
namespace {

std::atomic<bool> active{false};
std::mutex entries_mutex;
std::map<std::pair<std::string, std::string>, ProfileEntry> entries;
thread_local int depth = 0;                 // ops call ops (lora_linear -> linear): the outermost is timed
thread_local double* open_flops = nullptr;  // the timed op's work counter on this thread

double now_ms() {
  using namespace std::chrono;
  return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

}  // namespace

void profile_start() {
  std::lock_guard<std::mutex> lock(entries_mutex);
  entries.clear();
  active = true;
}

std::vector<ProfileEntry> profile_stop() {
  active = false;
  std::lock_guard<std::mutex> lock(entries_mutex);
  std::vector<ProfileEntry> out;
  for (auto& [key, e] : entries) out.push_back(e);
  entries.clear();
  std::sort(out.begin(), out.end(), [](const ProfileEntry& a, const ProfileEntry& b) { return a.ms > b.ms; });
  return out;
}

void profile_count_flops(double flops) {
  if (open_flops) *open_flops += flops;
}

ProfileScope::ProfileScope(const char* op, std::initializer_list<int64_t> shape) : op_(op) {
  if (depth++ > 0 || !active) return;
  for (int64_t n : shape) shape_ += (shape_.empty() ? "" : "x") + std::to_string(n);
  outermost_ = true;
  open_flops = &flops_;
  start_ms_ = now_ms();
}

ProfileScope::~ProfileScope() {
  --depth;
  if (!outermost_) return;
  const double ms = now_ms() - start_ms_;
  open_flops = nullptr;
  std::lock_guard<std::mutex> lock(entries_mutex);
  ProfileEntry& e = entries.try_emplace({op_, shape_}, ProfileEntry{op_, shape_, 0.0, 0, 0.0}).first->second;
  e.ms += ms;
  e.calls += 1;
  e.flops += flops_;
}

}  // namespace lt::cpu
