// Named, shaped parameter buffers on a backend, as a model's state dict.
#pragma once
#include <cstdint>
#include <map>
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

// Temporary backend buffers released together when the scope ends.
class Scratch {
 public:
  explicit Scratch(Ops& ops) : ops_(ops) {}
  ~Scratch() {
    for (float* p : owned_) ops_.release(p);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  float* alloc(int64_t n) {
    owned_.push_back(ops_.alloc(n));
    return owned_.back();
  }

 private:
  Ops& ops_;
  std::vector<float*> owned_;
};

// Parameters are fp32 unless added with another storage type (mixed precision's frozen
// weights); values always arrive as fp32 and are rounded on the backend.
class ParamStore {
 public:
  explicit ParamStore(Ops& ops) : ops_(ops) {}
  ~ParamStore() {
    for (auto& [name, e] : params_) ops_.release(e.data);
  }
  ParamStore(const ParamStore&) = delete;
  ParamStore& operator=(const ParamStore&) = delete;

  // A zero-filled fp32 parameter.
  float* add(const std::string& name, std::vector<int64_t> shape) {
    return static_cast<float*>(add(name, std::move(shape), DType::f32));
  }
  // A zero-filled parameter of any storage type.
  void* add(const std::string& name, std::vector<int64_t> shape, DType type) {
    NamedShape s{name, std::move(shape)};
    const int64_t floats = (s.numel() * dtype_size(type) + 3) / 4;
    float* p = ops_.alloc(floats);
    ops_.zero(p, floats);
    params_.emplace(name, Entry{p, type, s});
    return p;
  }
  // An fp32 parameter.
  float* get(const std::string& name) const {
    const Entry& e = entry(name);
    if (e.type != DType::f32) throw std::logic_error("parameter '" + name + "' is stored as " + dtype_name(e.type));
    return e.data;
  }
  TensorRef ref(const std::string& name) const {
    const Entry& e = entry(name);
    return {e.data, e.type};
  }
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
  // Parameter `name` from an open file: numel values stored as src_type (f32, f16 or bf16,
  // little-endian) at offset. Read straight into the parameter where it is host memory of that
  // type (mixed precision's bf16 weights stay as stored); else through a host buffer,
  // converted. Reports the non-finite values it held: read straight in, they are already in
  // place (the caller refuses the model); through the buffer, the parameter is left unset.
  NonFinite load(const std::string& name, int fd, int64_t offset, DType src_type);

  void set(const std::string& name, const float* host, int64_t n) {
    const Entry& e = entry(name);
    if (e.shape.numel() != n)
      throw std::invalid_argument("parameter '" + name + "' has " + std::to_string(e.shape.numel()) + " values, got " +
                                  std::to_string(n));
    if (e.type == DType::f32) return ops_.upload(e.data, host, n);
    Scratch staging(ops_);
    float* f32 = staging.alloc(n);
    ops_.upload(f32, host, n);
    ops_.convert(e.data, e.type, f32, n);
  }

 private:
  struct Entry {
    float* data;
    DType type;
    NamedShape shape;
  };
  const Entry& entry(const std::string& name) const {
    auto it = params_.find(name);
    if (it == params_.end()) throw std::invalid_argument("no parameter '" + name + "'");
    return it->second;
  }

  Ops& ops_;
  std::map<std::string, Entry> params_;
};

}  // namespace lt
