// Named, shaped parameter buffers on a backend, as a model's state dict.
#pragma once
#include <cstdint>
#include <map>
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

class ParamStore {
 public:
  explicit ParamStore(Ops& ops) : ops_(ops) {}
  ~ParamStore() {
    for (auto& [name, entry] : params_) ops_.release(entry.first);
  }
  ParamStore(const ParamStore&) = delete;
  ParamStore& operator=(const ParamStore&) = delete;

  // A zero-filled parameter.
  float* add(const std::string& name, std::vector<int64_t> shape) {
    NamedShape s{name, std::move(shape)};
    float* p = ops_.alloc(s.numel());
    ops_.zero(p, s.numel());
    params_.emplace(name, std::make_pair(p, s));
    return p;
  }
  float* get(const std::string& name) const {
    auto it = params_.find(name);
    if (it == params_.end()) throw std::invalid_argument("no parameter '" + name + "'");
    return it->second.first;
  }
  std::vector<NamedShape> list() const {
    std::vector<NamedShape> out;
    for (const auto& [name, entry] : params_) out.push_back(entry.second);
    return out;
  }
  void set(const std::string& name, const float* host, int64_t n) {
    auto it = params_.find(name);
    if (it == params_.end()) throw std::invalid_argument("no parameter '" + name + "'");
    if (it->second.second.numel() != n)
      throw std::invalid_argument("parameter '" + name + "' has " + std::to_string(it->second.second.numel()) + " values, got " + std::to_string(n));
    ops_.upload(it->second.first, host, n);
  }

 private:
  Ops& ops_;
  std::map<std::string, std::pair<float*, NamedShape>> params_;
};

}  // namespace lt
