#include "param_store.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "../cpu/thread_pool.h"

namespace lt {

namespace {

// Values whose exponent bits are all set (NaN, +-Inf), counted branch-free, and the first one.
template <typename Bits>
ParamStore::NonFinite scan(const Bits* x, int64_t n, Bits exponent, DType type) {
  ParamStore::NonFinite out;
  std::atomic<int64_t> count{0};
  // On every core: a real prior is a billion values read from the page cache, mapping each page.
  cpu::parallel_range(n, int64_t{1} << 20, [&](int64_t begin, int64_t end) {
    int64_t found = 0;
    for (int64_t i = begin; i < end; ++i) found += (x[i] & exponent) == exponent;
    count += found;
  });
  out.count = count;
  if (out.count == 0) return out;
  for (int64_t i = 0; i < n; ++i)
    if ((x[i] & exponent) == exponent) {
      out.first = i;
      out.first_value = type == DType::f32 ? bits_float(static_cast<uint32_t>(x[i])) : lowp_to_f32(x[i], type);
      break;
    }
  return out;
}

ParamStore::NonFinite scan(const void* data, int64_t n, DType type) {
  if (type == DType::f32) return scan(static_cast<const uint32_t*>(data), n, uint32_t{0x7f800000u}, type);
  const uint16_t exponent = type == DType::bf16 ? 0x7f80u : 0x7c00u;
  return scan(static_cast<const uint16_t*>(data), n, exponent, type);
}

}  // namespace

WeightFile::WeightFile(const std::string& path) : path_(path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(path + ": " + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    close(fd);
    throw std::runtime_error(path + ": " + std::strerror(err));
  }
  size_ = static_cast<int64_t>(st.st_size);
  if (size_ > 0) {
    // Private and writable so that a stray write copies a page instead of faulting; never
    // reserved against the commit limit, as no page is written on purpose.
    void* p = mmap(nullptr, static_cast<size_t>(size_), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
    const int err = errno;
    close(fd);
    if (p == MAP_FAILED) throw std::runtime_error(path + ": cannot map the file (" + std::strerror(err) + ")");
    base_ = static_cast<char*>(p);
  } else {
    close(fd);
  }
}

WeightFile::~WeightFile() {
  if (base_) munmap(base_, static_cast<size_t>(size_));
}

char* WeightFile::at(int64_t offset, int64_t bytes) const {
  if (offset < 0 || bytes < 0 || offset > size_ || bytes > size_ - offset)
    throw std::runtime_error(path_ + ": bytes " + std::to_string(offset) + ".." + std::to_string(offset + bytes) +
                             " lie outside the file's " + std::to_string(size_));
  return base_ + offset;
}

float* ParamStore::own(Entry& e, bool fill_zero) const {
  const int64_t floats = (e.shape.numel() * dtype_size(e.type) + 3) / 4;
  float* p = ops_.alloc(floats);
  if (fill_zero) ops_.zero(p, floats);
  if (e.owned) ops_.release(e.data);
  e.data = p;
  e.owned = true;
  e.file.reset();
  ++generation_;
  ++version_;
  return p;
}

ParamStore::NonFinite ParamStore::load(const std::string& name, const std::shared_ptr<WeightFile>& file, int64_t offset,
                                       DType src_type) {
  Entry& e = entry(name);
  const int64_t n = e.shape.numel();
  char* stored = file->at(offset, n * dtype_size(src_type));
  const bool aligned = reinterpret_cast<uintptr_t>(stored) % dtype_size(src_type) == 0;
  if (ops_.host_memory() && e.type == src_type && aligned) {
    // Pointed into the file: the page cache's copy is the parameter.
    if (e.owned) ops_.release(e.data);
    e.data = reinterpret_cast<float*>(stored);
    e.owned = false;
    e.file = file;
    ++generation_;
    ++version_;
    return scan(stored, n, src_type);
  }
  if (src_type == DType::f32 && aligned) {
    NonFinite bad = scan(stored, n, DType::f32);
    if (bad.count == 0) set(name, reinterpret_cast<const float*>(stored), n);
    return bad;
  }
  std::vector<float> f32(n);  // (n)
  if (src_type == DType::f32) {
    std::memcpy(f32.data(), stored, n * sizeof(float));
  } else {
    for (int64_t i = 0; i < n; ++i) {
      uint16_t bits;
      std::memcpy(&bits, stored + 2 * i, 2);
      f32[i] = lowp_to_f32(bits, src_type);
    }
  }
  NonFinite bad = scan(f32.data(), n, DType::f32);
  if (bad.count == 0) set(name, f32.data(), n);
  return bad;
}

void ParamStore::set(const std::string& name, const float* host, int64_t n) {
  Entry& e = entry(name);
  if (e.shape.numel() != n)
    throw std::invalid_argument("parameter '" + name + "' has " + std::to_string(e.shape.numel()) + " values, got " +
                                std::to_string(n));
  float* data = e.owned ? e.data : own(e, false);
  ++version_;
  if (e.type == DType::f32) return ops_.upload(data, host, n);
  Scratch staging(ops_);
  float* f32 = staging.alloc(n);
  ops_.upload(f32, host, n);
  ops_.convert(data, e.type, f32, n);
}

}  // namespace lt
