#include "gradient_buckets.h"

#include <algorithm>
#include <stdexcept>

namespace lt {

namespace {
constexpr int64_t kFirstBucketBytes = 1 << 20;
}

void GradientBuckets::plan(const std::vector<Slice>& slices, int64_t cap_bytes) {
  if (cap_bytes < 1) throw std::invalid_argument("gradient buckets need a cap of at least one byte");
  buckets_.clear();
  bucket_of_.assign(slices.size(), 0);
  cap_bytes_ = cap_bytes;
  int64_t cap = std::min(cap_bytes, kFirstBucketBytes);
  for (size_t i = slices.size(); i-- > 0;) {
    const Slice& s = slices[i];
    // Layers lie in forward order, so the reverse walk extends a bucket downwards.
    if (buckets_.empty() || buckets_.back().n * static_cast<int64_t>(sizeof(float)) >= cap) {
      if (!buckets_.empty()) cap = cap_bytes;
      buckets_.push_back({s.data, 0, 0, 0});
    }
    Bucket& b = buckets_.back();
    if (s.data + s.n != b.data && b.n > 0) throw std::logic_error("gradient slices are not back to back");
    b.data = s.data;
    b.n += s.n;
    b.layers++;
    bucket_of_[i] = static_cast<int>(buckets_.size() - 1);
  }
}

void GradientBuckets::begin(Collective& collective) {
  collective_ = &collective;
  next_ = 0;
  for (Bucket& b : buckets_) b.pending = b.layers;
}

void GradientBuckets::ready(int layer) {
  if (!collective_) return;
  Bucket& b = buckets_.at(bucket_of_.at(layer));
  if (b.pending == 0) throw std::logic_error("a layer's gradient was reported final twice");
  b.pending--;
  start_complete();
}

void GradientBuckets::start_complete() {
  while (next_ < buckets_.size() && buckets_[next_].pending == 0) {
    const Bucket& b = buckets_[next_++];
    collective_->start_allreduce_sum(b.data, b.n);
  }
}

void GradientBuckets::finish() {
  if (!collective_) return;
  Collective& collective = *collective_;
  collective_ = nullptr;
  for (size_t i = next_; i < buckets_.size(); ++i) collective.start_allreduce_sum(buckets_[i].data, buckets_[i].n);
  next_ = buckets_.size();
  collective.wait_all();
}

}  // namespace lt
