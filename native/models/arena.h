// One allocation for the buffers of one call shape: buffers are recorded as slots, counted, and
// then pointed into the block, each 64-byte aligned.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "../ops.h"

namespace lt {

class ArenaLayout {
 public:
  virtual ~ArenaLayout() = default;
  void take(float*& p, int64_t n) { slots_.emplace_back(&p, n); }
  int64_t floats() const {
    int64_t total = 0;
    for (const auto& [ptr, n] : slots_) total += aligned(n);
    return total;
  }
  // A layout with views that share another's buffer points them after this.
  virtual void bind(float* base) const {
    int64_t offset = 0;
    for (const auto& [ptr, n] : slots_) {
      *ptr = base + offset;
      offset += aligned(n);
    }
  }

 private:
  static int64_t aligned(int64_t n) { return (n + 15) / 16 * 16; }
  std::vector<std::pair<float**, int64_t>> slots_;
};

// The block a layout is bound to, released with its owner or when a new layout replaces it.
class Arena {
 public:
  explicit Arena(Ops& ops) : ops_(ops) {}
  ~Arena() { release(); }
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  void allocate(const ArenaLayout& layout) {
    release();
    floats_ = layout.floats();
    base_ = ops_.alloc(floats_);
    layout.bind(base_);
  }
  bool empty() const { return base_ == nullptr; }
  int64_t bytes() const { return floats_ * static_cast<int64_t>(sizeof(float)); }

 private:
  void release() {
    if (base_) ops_.release(base_);
    base_ = nullptr;
    floats_ = 0;
  }
  Ops& ops_;
  float* base_ = nullptr;
  int64_t floats_ = 0;
};

}  // namespace lt
