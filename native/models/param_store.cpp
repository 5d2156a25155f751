#include "param_store.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace lt {

namespace {

// buf (bytes) = the file's bytes at offset, whole.
void read_exactly(int fd, void* buf, int64_t bytes, int64_t offset) {
  char* p = static_cast<char*>(buf);
  while (bytes > 0) {
    const ssize_t got = pread(fd, p, static_cast<size_t>(bytes), static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw std::runtime_error(std::string("reading weights: ") + std::strerror(errno));
    if (got == 0) throw std::runtime_error("reading weights: the file ended early");
    p += got;
    offset += got;
    bytes -= got;
  }
}

// Values whose exponent bits are all set (NaN, +-Inf), counted branch-free, and the first one.
template <typename Bits>
ParamStore::NonFinite scan(const Bits* x, int64_t n, Bits exponent, DType type) {
  ParamStore::NonFinite out;
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) count += (x[i] & exponent) == exponent;
  out.count = count;
  if (count == 0) return out;
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

ParamStore::NonFinite ParamStore::load(const std::string& name, int fd, int64_t offset, DType src_type) {
  const Entry& e = entry(name);
  const int64_t n = e.shape.numel(), bytes = n * dtype_size(src_type);
  if (ops_.host_memory() && e.type == src_type) {
    // Straight into the parameter: one copy from the page cache.
    read_exactly(fd, e.data, bytes, offset);
    return scan(e.data, n, src_type);
  }
  std::vector<float> f32(n);  // (n)
  if (src_type == DType::f32) {
    read_exactly(fd, f32.data(), bytes, offset);
  } else {
    std::vector<uint16_t> lowp(n);  // (n)
    read_exactly(fd, lowp.data(), bytes, offset);
    for (int64_t i = 0; i < n; ++i) f32[i] = lowp_to_f32(lowp[i], src_type);
  }
  NonFinite bad = scan(f32.data(), n, DType::f32);
  if (bad.count == 0) set(name, f32.data(), n);
  return bad;
}

}  // namespace lt
