// The timestep (noise ratio) embedding both Würstchen stages share.
#pragma once
#include <cmath>
#include <cstdint>

namespace lt {

// diffusers' gen_r_embedding: [sin(r * 1e4 * f), cos(r * 1e4 * f)], f_i = exp(-i ln(1e4) / (h - 1)).
// f is computed in float32 as diffusers does (arange(...).float()); the products and sines in
// double, as the float64 reference computes them. out (B, c_r); r (B).
inline void r_embedding(float* out, const float* r, int64_t B, int64_t c_r) {
  const int64_t half = c_r / 2;
  const float step = static_cast<float>(std::log(10000.0) / static_cast<double>(half - 1));
  for (int64_t b = 0; b < B; ++b) {
    const double R = static_cast<double>(r[b]) * 10000.0;
    for (int64_t i = 0; i < half; ++i) {
      const float f = std::exp(static_cast<float>(i) * -step);
      out[b * c_r + i] = static_cast<float>(std::sin(R * static_cast<double>(f)));
      out[b * c_r + half + i] = static_cast<float>(std::cos(R * static_cast<double>(f)));
    }
    if (c_r % 2) out[b * c_r + c_r - 1] = 0.0f;
  }
}

}  // namespace lt
