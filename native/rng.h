// Counter-based random numbers shared by every backend: the value for (seed, index) depends on
// nothing else, so masks can be recomputed in the backward and a resumed run draws exactly
// what an uninterrupted one would.
#pragma once
#include <cstdint>

namespace lt {

inline uint64_t mix64(uint64_t z) {  // splitmix64's finaliser
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Uniform in [0, 1) with 24 random bits (exactly representable as float).
inline float uniform01(uint64_t seed, uint64_t index) {
  uint64_t h = mix64(seed + 0x9e3779b97f4a7c15ULL * (index + 1));
  return static_cast<float>(h >> 40) * (1.0f / 16777216.0f);
}

// A new stream's seed from a parent seed and a site number (layer, purpose).
inline uint64_t derive_seed(uint64_t seed, uint64_t site) { return mix64(seed ^ mix64(site + 0x632be59bd9b4e019ULL)); }

}  // namespace lt
