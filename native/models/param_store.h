// Named, shaped parameter buffers on a backend, as a model's state dict.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../ops.h"

namespace lt {

struct NamedShape {
  std::string name;
  std::vector<int64_t> shape;
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

// A weights file mapped into memory, private and copy-on-write: parameters read from it may
// point into it (host backends, stored type kept) instead of holding a copy, and the rest are
// converted or uploaded from it. The mapping lives as long as a parameter points into it.
class WeightFile {
 public:
  // Throws naming path when it cannot be opened or mapped.
  explicit WeightFile(const std::string& path);
  ~WeightFile();
  WeightFile(const WeightFile&) = delete;
  WeightFile& operator=(const WeightFile&) = delete;
  // bytes at offset, checked to lie inside the file.
  char* at(int64_t offset, int64_t bytes) const;

 private:
  std::string path_;
  char* base_ = nullptr;
  int64_t size_ = 0;
};

// Parameters are fp32 unless added with another storage type (mixed precision's frozen
// weights). Memory is taken on first use, so that loading can point a parameter into its mapped
// file instead; a parameter never set reads as zeros. Pointers handed out stay valid until the
// generation changes (a load or set moved a parameter), so models resolve theirs again then.
class ParamStore {
 public:
  explicit ParamStore(Ops& ops) : ops_(ops) {}
  ~ParamStore() {
    for (auto& [name, e] : params_)
      if (e.owned) ops_.release(e.data);
  }
  ParamStore(const ParamStore&) = delete;
  ParamStore& operator=(const ParamStore&) = delete;

  // An fp32 parameter, or one of any storage type.
  void add(const std::string& name, std::vector<int64_t> shape, DType type = DType::f32) {
    params_.emplace(name, Entry{nullptr, type, NamedShape{name, std::move(shape)}, false, nullptr});
  }
  // An fp32 parameter.
  float* get(const std::string& name) const {
    Entry& e = entry(name);
    if (e.type != DType::f32) throw std::logic_error("parameter '" + name + "' is stored as " + dtype_name(e.type));
    return materialize(e);
  }
  TensorRef ref(const std::string& name) const {
    Entry& e = entry(name);
    return {materialize(e), e.type};
  }
  // Changes whenever a parameter's memory moves.
  uint64_t generation() const { return generation_; }
  // Changes whenever a parameter's values change (or its memory moves): for results a model
  // keeps from its weights.
  uint64_t version() const { return version_; }
  std::vector<NamedShape> list() const {
    std::vector<NamedShape> out;
    for (const auto& [name, e] : params_) out.push_back(e.shape);
    return out;
  }
  int64_t bytes() const {
    int64_t total = 0;
    for (const auto& [name, e] : params_) total += e.shape.numel() * dtype_size(e.type);
    return total;
  }
  // The NaN and infinities a loaded parameter held: how many, the first's index and value.
  struct NonFinite {
    int64_t count = 0, first = -1;
    double first_value = 0.0;
  };
  // Parameter `name` from a mapped file: its values stored as src_type (f32, f16 or bf16,
  // little-endian) at offset. Host memory of the stored type points into the file (mixed
  // precision's bf16 weights stay as stored, nothing is copied); else the values are converted
  // or uploaded. Reports the non-finite values it held; the caller then refuses the model, and
  // the parameter is left unset unless it points into the file.
  NonFinite load(const std::string& name, const std::shared_ptr<WeightFile>& file, int64_t offset, DType src_type);

  void set(const std::string& name, const float* host, int64_t n);

 private:
  struct Entry {
    float* data;  // null until first use
    DType type;
    NamedShape shape;
    bool owned;                        // data from ops_.alloc, else inside mapping
    std::shared_ptr<WeightFile> file;  // what data points into, when not owned
  };
  Entry& entry(const std::string& name) const {
    auto it = params_.find(name);
    if (it == params_.end()) throw std::invalid_argument("no parameter '" + name + "'");
    return it->second;
  }
  // e's own memory, zero-filled when fill_zero, replacing what it pointed at.
  float* own(Entry& e, bool fill_zero) const;
  float* materialize(Entry& e) const { return e.data ? e.data : own(e, true); }

  Ops& ops_;
  mutable std::map<std::string, Entry> params_;
  mutable uint64_t generation_ = 0;
  mutable uint64_t version_ = 0;
};

}  // namespace lt
