// Counter-based random numbers shared by every backend: the value for (seed, index) depends on
// nothing else, so masks can be recomputed in the backward and a resumed run draws exactly
// what an uninterrupted one would.
#pragma once
#include <cstdint>

#include "host_device.h"  // the hash and uniform compile for the GPU too: every backend draws the same masks

namespace lt {

inline uint64_t mix64(uint64_t z) {  // splitmix64's finaliser
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// A 32-bit integer hash (Chris Wellons' lowbias32): cheap with 32-bit lanes, so the vector
// kernels draw bit-identical numbers to the scalar ones.
LT_HOST_DEVICE inline uint32_t hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

// The two 32-bit keys a 64-bit seed expands to.
struct DropoutKey {
  uint32_t a, b;
  static DropoutKey from_seed(uint64_t seed) {
    uint64_t m = mix64(seed);
    return {static_cast<uint32_t>(m), static_cast<uint32_t>(m >> 32)};
  }
};

// Uniform in [0, 1) with 24 random bits (exactly representable as float); index < 2^32.
LT_HOST_DEVICE inline float uniform01(uint32_t key_a, uint32_t key_b, uint32_t index) {
  return static_cast<float>(hash32(hash32(index ^ key_a) + key_b) >> 8) * (1.0f / 16777216.0f);
}
inline float uniform01(const DropoutKey& key, uint32_t index) { return uniform01(key.a, key.b, index); }

// A new stream's seed from a parent seed and a site number (layer, purpose).
inline uint64_t derive_seed(uint64_t seed, uint64_t site) { return mix64(seed ^ mix64(site + 0x632be59bd9b4e019ULL)); }

}  // namespace lt
