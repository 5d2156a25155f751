// Model glue: timestep modulation, dropout, sequence concatenation, layout transposes and the
// prior's output head, forward and backward side by side.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "../rng.h"
#include "cpu_ops.h"
#include "kernels.h"
#include "profile.h"
#include "thread_pool.h"

namespace lt::cpu {

void CpuOps::modulate_forward(float* y, const float* x, const float* ab, int64_t B, int64_t P, int64_t C) {
  LT_CPU_PROFILE("modulate_forward");
  parallel_range(B * P, 64, [&](int64_t r0, int64_t r1) {  // by rows: a batch of one uses every core
    for (int64_t bp = r0; bp < r1; ++bp) {
      const float* a = ab + bp / P * 2 * C;  // (C) scale, then (C) shift
      const float* sh = a + C;
      for (int64_t c = 0; c < C; ++c) y[bp * C + c] = x[bp * C + c] * (1.0f + a[c]) + sh[c];
    }
  });
}

void CpuOps::modulate_backward(float* dx, float* dab, const float* dy, const float* x, const float* ab, int64_t B,
                               int64_t P, int64_t C) {
  LT_CPU_PROFILE("modulate_backward");
  if (dx)
    parallel_range(B * P, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t bp = r0; bp < r1; ++bp) {
        const float* a = ab + bp / P * 2 * C;  // (C)
        for (int64_t c = 0; c < C; ++c) dx[bp * C + c] += dy[bp * C + c] * (1.0f + a[c]);
      }
    });
  if (!dab) return;
  parallel_for(B, [&](int64_t b) {  // an adapter on the timestep mapper: (B, 2C) sums over positions
    std::vector<double> da(C, 0.0), db(C, 0.0);
    for (int64_t p = 0; p < P; ++p) {
      const float* dyr = dy + (b * P + p) * C;
      const float* xr = x + (b * P + p) * C;
      for (int64_t c = 0; c < C; ++c) {
        da[c] += static_cast<double>(dyr[c]) * xr[c];
        db[c] += dyr[c];
      }
    }
    for (int64_t c = 0; c < C; ++c) {
      dab[b * 2 * C + c] += static_cast<float>(da[c]);
      dab[b * 2 * C + C + c] += static_cast<float>(db[c]);
    }
  });
}

void CpuOps::dropout_forward(TensorOut y, TensorRef x, float p, uint64_t seed, int64_t n) {
  LT_CPU_PROFILE("dropout_forward");
  const KernelSet& ks = active_kernels();
  const DropoutKey key = DropoutKey::from_seed(seed);
  const float scale = 1.0f / (1.0f - p);
  parallel_range(n, 1 << 14, [&](int64_t i0, int64_t i1) {
    if (x.type == DType::f32 && y.type == DType::f32)
      return ks.dropout(y.f32() + i0, x.f32() + i0, p, scale, key.a, key.b, i0, i1 - i0, false);
    float block[kWidenBlock];  // through fp32: widened, dropped, rounded once
    for (int64_t b = i0; b < i1; b += kWidenBlock) {
      const int64_t m = std::min(kWidenBlock, i1 - b);
      ks.dropout(block, load_values(x, b, m, block), p, scale, key.a, key.b, b, m, false);
      store_values(y, b, block, m);
    }
  });
}

void CpuOps::dropout_add_forward(float* out, const float* y, const float* residual, float p, uint64_t seed, int64_t n) {
  LT_CPU_PROFILE("dropout_add_forward");
  const KernelSet& ks = active_kernels();
  const DropoutKey key = DropoutKey::from_seed(seed);
  parallel_range(n, 1 << 14, [&](int64_t i0, int64_t i1) {
    std::memcpy(out + i0, residual + i0, static_cast<size_t>(i1 - i0) * sizeof(float));
    ks.dropout(out + i0, y + i0, p, 1.0f / (1.0f - p), key.a, key.b, i0, i1 - i0, true);  // out += dropout(y)
  });
}

void CpuOps::dropout_backward(float* dx, const float* dy, float p, uint64_t seed, int64_t n) {
  LT_CPU_PROFILE("dropout_backward");
  const KernelSet& ks = active_kernels();
  const DropoutKey key = DropoutKey::from_seed(seed);
  parallel_range(n, 1 << 14, [&](int64_t i0, int64_t i1) {
    ks.dropout(dx + i0, dy + i0, p, 1.0f / (1.0f - p), key.a, key.b, i0, i1 - i0, true);
  });
}

void CpuOps::embedding_forward(float* out, const float* table, const int32_t* ids, int64_t n, int64_t dim) {
  LT_CPU_PROFILE("embedding_forward");
  parallel_range(n, 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) std::copy(table + ids[i] * dim, table + (ids[i] + 1) * dim, out + i * dim);
  });
}

void CpuOps::channel_mean(float* out, const float* x, int64_t B, int64_t P, int64_t C) {
  LT_CPU_PROFILE("channel_mean");
  // A task per image and strip of channels, so that one image (the embedding pass at batch 1)
  // keeps every thread busy. Runs of pixels are summed in float (four lanes a vector in the
  // baseline instruction set, against two in double) and joined in double.
  constexpr int64_t kStrip = 64, kRun = 32;
  const int64_t strips = (C + kStrip - 1) / kStrip;
  parallel_for(B * strips, [&](int64_t task) {
    const int64_t b = task / strips, c0 = task % strips * kStrip, n = std::min(kStrip, C - c0);
    const float* xb = x + b * P * C + c0;  // (P, n) of row stride C
    double total[kStrip] = {};
    for (int64_t p0 = 0; p0 < P; p0 += kRun) {
      float run[kStrip] = {};
      for (int64_t p = p0; p < std::min(P, p0 + kRun); ++p)
        for (int64_t c = 0; c < n; ++c) run[c] += xb[p * C + c];
      for (int64_t c = 0; c < n; ++c) total[c] += run[c];
    }
    for (int64_t c = 0; c < n; ++c) out[b * C + c0 + c] = static_cast<float>(total[c] / static_cast<double>(P));
  });
}

void CpuOps::scale_channels(float* y, const float* x, const float* s, int64_t B, int64_t P, int64_t C) {
  LT_CPU_PROFILE("scale_channels");
  parallel_range(B * P, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t bp = r0; bp < r1; ++bp) {
      const float* sb = s + (bp / P) * C;
      for (int64_t c = 0; c < C; ++c) y[bp * C + c] = x[bp * C + c] * sb[c];
    }
  });
}

void CpuOps::concat_seq(TensorOut out, TensorRef a, TensorRef b, int64_t B, int64_t Na, int64_t Nb, int64_t C) {
  LT_CPU_PROFILE("concat_seq");
  const int64_t size = dtype_size(out.type);
  parallel_for(B, [&](int64_t i) {
    char* row = static_cast<char*>(out.data) + i * (Na + Nb) * C * size;
    convert(row, out.type, a.from(i * Na * C), Na * C);
    convert(row + Na * C * size, out.type, b.from(i * Nb * C), Nb * C);
  });
}

void CpuOps::split_seq_backward(float* da, float* db, const float* dout, int64_t B, int64_t Na, int64_t Nb, int64_t C) {
  LT_CPU_PROFILE("split_seq_backward");
  parallel_for(B, [&](int64_t i) {
    const float* src = dout + i * (Na + Nb) * C;
    if (da)
      for (int64_t j = 0; j < Na * C; ++j) da[i * Na * C + j] += src[j];
    if (db)
      for (int64_t j = 0; j < Nb * C; ++j) db[i * Nb * C + j] += src[Na * C + j];
  });
}

void CpuOps::transpose_cp(float* out, const float* x, int64_t B, int64_t C, int64_t P) {
  LT_CPU_PROFILE("transpose_cp");
  // Columns of kTile pixels (each channel's run of them whole cache lines), split between the
  // threads rather than by image: one image (a batch of one) uses every core.
  constexpr int64_t kTile = 32;
  const int64_t columns = (P + kTile - 1) / kTile;
  parallel_range(B * columns, 4, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / columns, p0 = t % columns * kTile, p1 = std::min(P, p0 + kTile);
      const float* xb = x + b * C * P;
      float* ob = out + b * P * C;
      for (int64_t c = 0; c < C; ++c)
        for (int64_t p = p0; p < p1; ++p) ob[p * C + c] = xb[c * P + p];
    }
  });
}

void CpuOps::prior_output_forward(float* out, const float* x_in, const float* ab, int64_t B, int64_t Cin, int64_t P) {
  LT_CPU_PROFILE("prior_output_forward");
  parallel_for(B, [&](int64_t b) {
    for (int64_t c = 0; c < Cin; ++c)
      for (int64_t p = 0; p < P; ++p) {
        const float* abr = ab + (b * P + p) * 2 * Cin;
        const int64_t i = (b * Cin + c) * P + p;
        out[i] = (x_in[i] - abr[c]) / (std::fabs(1.0f - abr[Cin + c]) + 1e-5f);
      }
  });
}

void CpuOps::prior_output_backward(float* dab, const float* dout, const float* x_in, const float* ab, int64_t B,
                                   int64_t Cin, int64_t P) {
  LT_CPU_PROFILE("prior_output_backward");
  // out = (x - a) / (|1 - b| + eps): d/da = -1/den; d/db = (x - a) sign(1 - b) / den^2
  // (torch's sign(0) = 0 at b = 1).
  parallel_for(B, [&](int64_t b) {
    for (int64_t c = 0; c < Cin; ++c)
      for (int64_t p = 0; p < P; ++p) {
        const float* abr = ab + (b * P + p) * 2 * Cin;
        float* dabr = dab + (b * P + p) * 2 * Cin;
        const int64_t i = (b * Cin + c) * P + p;
        const float one_minus_b = 1.0f - abr[Cin + c];
        const float den = std::fabs(one_minus_b) + 1e-5f;
        const float sign = one_minus_b > 0.0f ? 1.0f : (one_minus_b < 0.0f ? -1.0f : 0.0f);
        dabr[c] += -dout[i] / den;
        dabr[Cin + c] += dout[i] * (x_in[i] - abr[c]) * sign / (den * den);
      }
  });
}

}  // namespace lt::cpu
