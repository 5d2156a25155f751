// The gradient block cut into buckets that are summed across processes while the backward still
// runs, as torch's DDP does: layers are grouped in the order the backward finishes them (the
// reverse of the forward), a bucket closing once it holds the cap (the first at 1 MiB, so that
// sums start early), and each bucket is started once all its layers have their gradient.
// Buckets start in one fixed order, which every process shares.
#pragma once
#include <cstdint>
#include <vector>

#include "collective.h"

namespace lt {

class GradientBuckets {
 public:
  struct Slice {
    float* data;  // one layer's gradients, contiguous
    int64_t n;
  };
  // slices: by layer in forward order, laid out back to back in one block.
  void plan(const std::vector<Slice>& slices, int64_t cap_bytes);
  int64_t cap_bytes() const { return cap_bytes_; }
  size_t size() const { return buckets_.size(); }
  // Floats of each bucket, in the order they start.
  std::vector<int64_t> sizes() const {
    std::vector<int64_t> out;
    for (const Bucket& b : buckets_) out.push_back(b.n);
    return out;
  }
  // A backward whose gradients collective sums begins.
  void begin(Collective& collective);
  // Layer `layer` (forward order) has its final gradient.
  void ready(int layer);
  // Starts the buckets still waiting (layers the backward did not reach) and waits for all.
  void finish();

 private:
  struct Bucket {
    float* data;
    int64_t n;
    int layers, pending;
  };
  void start_complete();

  std::vector<Bucket> buckets_;  // in the order the backward completes them
  std::vector<int> bucket_of_;   // by layer
  int64_t cap_bytes_ = 0;
  Collective* collective_ = nullptr;
  size_t next_ = 0;  // the first bucket not started
};

}  // namespace lt
