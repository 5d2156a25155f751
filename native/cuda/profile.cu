#include "profile.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>

#include "common.cuh"

namespace lt::cuda {
namespace {

struct Record {
  const char* op;
  cudaEvent_t start, stop;
};

std::atomic<bool> active{false};
std::mutex records_mutex;
std::vector<Record> records;
thread_local int depth = 0;  // ops call ops (linear -> gemm): only the outermost is timed

}  // namespace

void profile_start() {
  std::lock_guard<std::mutex> lock(records_mutex);
  for (const Record& r : records) {  // a previous session never stopped, or an op ended after its stop
    cudaEventDestroy(r.start);
    cudaEventDestroy(r.stop);
  }
  records.clear();
  active = true;
}

std::vector<ProfileEntry> profile_stop() {
  active = false;
  LT_CUDA(cudaDeviceSynchronize());
  std::lock_guard<std::mutex> lock(records_mutex);
  std::map<std::string, ProfileEntry> by_op;
  for (const Record& r : records) {
    float ms = 0.0f;
    cudaEventElapsedTime(&ms, r.start, r.stop);
    ProfileEntry& e = by_op.try_emplace(r.op, ProfileEntry{r.op, 0.0, 0}).first->second;
    e.ms += ms;
    e.calls += 1;
    cudaEventDestroy(r.start);
    cudaEventDestroy(r.stop);
  }
  records.clear();
  cudaGetLastError();
  std::vector<ProfileEntry> out;
  for (auto& [op, e] : by_op) out.push_back(e);
  std::sort(out.begin(), out.end(), [](const ProfileEntry& a, const ProfileEntry& b) { return a.ms > b.ms; });
  return out;
}

ProfileScope::ProfileScope(const char* op) : op_(op) {
  if (depth++ > 0 || !active) return;
  cudaEvent_t start;
  if (cudaEventCreate(&start) != cudaSuccess || cudaEventRecord(start, 0) != cudaSuccess) {
    cudaGetLastError();
    return;
  }
  start_ = start;
  outermost_ = true;
}

ProfileScope::~ProfileScope() {
  --depth;
  if (!outermost_) return;
  cudaEvent_t stop;
  if (cudaEventCreate(&stop) != cudaSuccess || cudaEventRecord(stop, 0) != cudaSuccess) {
    cudaGetLastError();
    cudaEventDestroy(static_cast<cudaEvent_t>(start_));
    return;
  }
  std::lock_guard<std::mutex> lock(records_mutex);
  records.push_back({op_, static_cast<cudaEvent_t>(start_), stop});
}

}  // namespace lt::cuda
