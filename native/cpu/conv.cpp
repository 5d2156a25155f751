// Depthwise k x k convolution (channels last; the prior's 3x3 with its backward), general k x k
// convolution (the image encoder's), and 1x1 convolution (NCHW).
#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu_ops.h"
#include "gemm.h"
#include "kernels.h"
#include "profile.h"
#include "thread_pool.h"

namespace lt::cpu {
namespace {

// w (C, k, k) -> taps (k*k, C), so the inner loops run over contiguous channels.
std::vector<float> taps_channels_last(const float* w, int64_t C, int64_t kk) {
  std::vector<float> taps(kk * C);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t t = 0; t < kk; ++t) taps[t * C + c] = w[c * kk + t];
  return taps;
}

// A k x k convolution, channels last: y (B, Ho, Wo, Cout) = bias + patches (B Ho Wo, K) W^T,
// K = (ky, kx, cin), done as GEMM register tiles that read the input in place. For one kernel
// row ky, the patches of mr neighbouring output pixels of an output row are mr rows of a
// strided matrix: pixel ox's taps along x are k adjacent input pixels, k * Cin contiguous
// floats from input column ox * stride - pad on, and the next pixel's start lies stride * Cin
// further. So a tile is k GEMM steps of k * Cin over that ky's weight rows, with no patch
// matrix built or packed (packing it cost as long as the products for narrow outputs). Tiles
// that reach into the padding at the row's ends gather their patches first.
struct DirectConv {
  const KernelSet& ks;  // the set that packed `panels` (its nr)
  const float* x;       // (B, H, W, Cin)
  const float* panels;  // W^T as ceil(Cout / nr) panels of (K, nr), zero-padded columns
  const float* bias;    // (Cout) or null
  bool silu;
  float beta;  // 1 when the output already holds a residual to add to, else 0
  int64_t H, W, Cin, Cout, k, stride, pad, Wo;

  int64_t K() const { return k * k * Cin; }
  int64_t in_col(int64_t ox) const { return ox * stride - pad; }
  // Every tap of pixels [ox0, ox0 + n) inside the input row.
  bool inside(int64_t ox0, int64_t n) const { return in_col(ox0) >= 0 && in_col(ox0 + n - 1) + k <= W; }

  // dst (rows, K): patches of pixels [ox0, ox0 + rows) of output row oy of image b, zeros in
  // the padding.
  void gather(float* dst, int64_t b, int64_t oy, int64_t ox0, int rows) const {
    std::fill(dst, dst + rows * K(), 0.0f);
    for (int i = 0; i < rows; ++i)
      for (int64_t ky = 0; ky < k; ++ky) {
        const int64_t iy = oy * stride + ky - pad;
        for (int64_t kx = 0; kx < k && iy >= 0 && iy < H; ++kx) {
          const int64_t ix = in_col(ox0 + i) + kx;
          if (ix >= 0 && ix < W)
            std::copy_n(x + ((b * H + iy) * W + ix) * Cin, Cin, dst + i * K() + (ky * k + kx) * Cin);
        }
      }
  }

  // Tile t of a row: pixels [t mr, t mr + tile_rows(t)), the last tile the row's remainder.
  int tile_rows(int64_t t, int mr) const { return static_cast<int>(std::min<int64_t>(mr, Wo - t * mr)); }
  bool in_place(int64_t t, int mr) const { return inside(t * mr, tile_rows(t, mr)); }

  // One output row, y_row (Wo, Cout). gathered: a (mr, K) block per tile not read in place.
  void row(float* y_row, int64_t b, int64_t oy, std::vector<float>& gathered) const {
    const int mr = ks.mr, nr = ks.nr;
    const int64_t seg = k * Cin, tiles = (Wo + mr - 1) / mr;
    std::vector<int64_t> slot(static_cast<size_t>(tiles), -1);  // tile -> its block in gathered
    int64_t blocks = 0;
    for (int64_t t = 0; t < tiles; ++t)
      if (!in_place(t, mr)) slot[t] = blocks++;
    if (gathered.size() < static_cast<size_t>(blocks * mr * K())) gathered.resize(blocks * mr * K());
    for (int64_t t = 0; t < tiles; ++t)
      if (slot[t] >= 0) gather(gathered.data() + slot[t] * mr * K(), b, oy, t * mr, tile_rows(t, mr));
    // Kernel rows in the padding add nothing (the weights are finite: checked on load). Row
    // oy * stride always lies inside (pad = k / 2), so the range is never empty.
    const int64_t ky0 = std::max<int64_t>(0, pad - oy * stride), ky1 = std::min<int64_t>(k, H + pad - oy * stride);
    for (int64_t j0 = 0; j0 < Cout; j0 += nr) {
      const int cols = static_cast<int>(std::min<int64_t>(nr, Cout - j0));
      const float* panel = panels + (j0 / nr) * K() * nr;
      const float* bias_j = bias ? bias + j0 : nullptr;
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t ox0 = t * mr;
        TileOut out{y_row + ox0 * Cout + j0, Cout, tile_rows(t, mr), cols, 1.0f, beta, bias_j, silu};
        if (slot[t] >= 0) {
          ks.gemm_tile_rows(K(), gathered.data() + slot[t] * mr * K(), K(), panel, out);
          continue;
        }
        // A GEMM step of k * Cin per kernel row, summed in C; the epilogue after the last.
        for (int64_t ky = ky0; ky < ky1; ++ky) {
          const bool last = ky + 1 == ky1;
          const float* a = x + ((b * H + oy * stride + ky - pad) * W + in_col(ox0)) * Cin;
          ks.gemm_tile_rows(
              seg, a, stride * Cin, panel + ky * seg * nr,
              {out.c, Cout, out.rows, cols, 1.0f, ky == ky0 ? beta : 1.0f, last ? bias_j : nullptr, last && silu});
        }
      }
    }
  }
};

}  // namespace

void CpuOps::depthwise_conv3x3_forward(float* y, const float* x, const float* w, const float* bias, int64_t B,
                                       int64_t H, int64_t W, int64_t C) {
  LT_CPU_PROFILE("depthwise_conv3x3_forward");
  depthwise_conv_forward(y, x, w, bias, B, H, W, C, 3, 1, false, false);
}

void CpuOps::depthwise_conv3x3_backward(float* dx, float* dw, float* dbias, const float* dy, const float* x,
                                        const float* w, int64_t B, int64_t H, int64_t W, int64_t C) {
  LT_CPU_PROFILE("depthwise_conv3x3_backward");
  const std::vector<float> taps = taps_channels_last(w, C, 9);
  // dx gathers from the 3x3 output neighbourhood (the kernel flipped), so rows are independent.
  if (dx)
    parallel_for(B * H, [&](int64_t bh) {
      const int64_t b = bh / H, h = bh % H;
      for (int64_t wi = 0; wi < W; ++wi) {
        float* g = dx + ((b * H + h) * W + wi) * C;
        for (int ky = 0; ky < 3; ++ky) {
          const int64_t hy = h - ky + 1;
          if (hy < 0 || hy >= H) continue;
          for (int kx = 0; kx < 3; ++kx) {
            const int64_t wx = wi - kx + 1;
            if (wx < 0 || wx >= W) continue;
            const float* go = dy + ((b * H + hy) * W + wx) * C;
            const float* tap = taps.data() + (ky * 3 + kx) * C;
            for (int64_t c = 0; c < C; ++c) g[c] += tap[c] * go[c];
          }
        }
      }
    });
  if (!dw && !dbias) return;
  // Weight and bias gradients reduce over every position: one partial sum per row block.
  const int64_t rows = B * H;
  const int64_t blocks = std::min<int64_t>(rows, num_threads() * 4);
  std::vector<std::vector<double>> parts(blocks, std::vector<double>(10 * C, 0.0));  // 9 taps + bias
  parallel_for(blocks, [&](int64_t blk) {
    std::vector<double>& acc = parts[blk];
    for (int64_t bh = rows * blk / blocks; bh < rows * (blk + 1) / blocks; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      for (int64_t wi = 0; wi < W; ++wi) {
        const float* go = dy + ((b * H + h) * W + wi) * C;
        for (int64_t c = 0; c < C; ++c) acc[9 * C + c] += go[c];
        for (int ky = 0; ky < 3; ++ky) {
          const int64_t hy = h + ky - 1;
          if (hy < 0 || hy >= H) continue;
          for (int kx = 0; kx < 3; ++kx) {
            const int64_t wx = wi + kx - 1;
            if (wx < 0 || wx >= W) continue;
            const float* in = x + ((b * H + hy) * W + wx) * C;
            double* a = acc.data() + (ky * 3 + kx) * C;
            for (int64_t c = 0; c < C; ++c) a[c] += static_cast<double>(go[c]) * in[c];
          }
        }
      }
    }
  });
  for (int64_t c = 0; c < C; ++c) {
    for (int t = 0; t < 10; ++t) {
      double s = 0.0;
      for (const auto& p : parts) s += p[t * C + c];
      if (t < 9 && dw) dw[c * 9 + t] += static_cast<float>(s);
      if (t == 9 && dbias) dbias[c] += static_cast<float>(s);
    }
  }
}

void CpuOps::conv2d_forward(float* y, const float* x, const float* w, const float* bias, const float* residual,
                            int64_t B, int64_t H, int64_t W, int64_t Cin, int64_t Cout, int64_t k, int64_t stride,
                            bool silu) {
  LT_CPU_PROFILE("conv2d_forward", {B, H, W, Cin, Cout, k});
  check_conv2d_residual(residual, silu);
  const int64_t Ho = (H + stride - 1) / stride, Wo = (W + stride - 1) / stride, pad = k / 2;
  const int64_t rows = B * Ho * Wo, K = k * k * Cin;
  // The residual is summed by the tiles as C (beta 1), so it must lie in y first.
  if (residual && residual != y) convert(y, DType::f32, residual, rows * Cout);
  const float beta = residual ? 1.0f : 0.0f;
  if (k == 1 && stride == 1) {  // a plain GEMM over positions
    cpu::gemm({y, x, w, rows, Cout, Cin, false, true, 1.0f, beta, Cin, Cin, Cout, bias, silu});
    return;
  }
  profile_count_flops(2.0 * rows * Cout * K);
  const KernelSet& ks = active_kernels();
  const int nr = ks.nr;
  PanelBuffer panels;  // (ceil(Cout / nr), K, nr)
  panels.reserve((Cout + nr - 1) / nr * nr * K);
  for (int64_t j = 0; j < Cout; j += nr)
    ks.pack_gather(panels.data() + j * K, w + j * K, K, K, static_cast<int>(std::min<int64_t>(nr, Cout - j)), nr);
  const DirectConv conv{ks, x, panels.data(), bias, silu, beta, H, W, Cin, Cout, k, stride, pad, Wo};
  parallel_for(B * Ho, [&](int64_t row) {
    thread_local std::vector<float> gathered;
    conv.row(y + row * Wo * Cout, row / Ho, row % Ho, gathered);
  });
}

void CpuOps::depthwise_conv_forward(float* y, const float* x, const float* w, const float* bias, int64_t B, int64_t H,
                                    int64_t W, int64_t C, int64_t k, int64_t stride, bool replicate, bool silu) {
  LT_CPU_PROFILE("depthwise_conv_forward");
  const int64_t Ho = (H + stride - 1) / stride, Wo = (W + stride - 1) / stride, pad = k / 2;
  if (k * k > kMaxDepthwiseTaps)
    throw std::invalid_argument("depthwise convolution: kernel size " + std::to_string(k) + " is over 15");
  const std::vector<float> taps = taps_channels_last(w, C, k * k);
  const KernelSet& ks = active_kernels();
  parallel_for(B * Ho, [&](int64_t bh) {
    const int64_t b = bh / Ho, oy = bh % Ho;
    std::vector<const float*> in(static_cast<size_t>(k * k));  // each tap's input pixel, null in the padding
    for (int64_t ox = 0; ox < Wo; ++ox) {
      for (int64_t ky = 0; ky < k; ++ky)
        for (int64_t kx = 0; kx < k; ++kx) {
          int64_t iy = oy * stride + ky - pad, ix = ox * stride + kx - pad;
          if (replicate) iy = std::clamp<int64_t>(iy, 0, H - 1), ix = std::clamp<int64_t>(ix, 0, W - 1);
          const bool inside = iy >= 0 && iy < H && ix >= 0 && ix < W;
          in[ky * k + kx] = inside ? x + ((b * H + iy) * W + ix) * C : nullptr;
        }
      float* out = y + ((b * Ho + oy) * Wo + ox) * C;
      ks.depthwise_pixel(out, in.data(), taps.data(), bias, C, static_cast<int>(k * k), silu);
    }
  });
}

void CpuOps::pixel_unshuffle(float* y, const float* x, int64_t B, int64_t H, int64_t W, int64_t C, int64_t r) {
  LT_CPU_PROFILE("pixel_unshuffle");
  const int64_t Ho = H / r, Wo = W / r;
  parallel_for(B * Ho, [&](int64_t row) {
    const int64_t b = row / Ho, oy = row % Ho;
    for (int64_t ox = 0; ox < Wo; ++ox) {
      float* out = y + (row * Wo + ox) * C * r * r;
      for (int64_t i = 0; i < r; ++i)
        for (int64_t j = 0; j < r; ++j) {
          const float* in = x + ((b * H + oy * r + i) * W + ox * r + j) * C;
          for (int64_t c = 0; c < C; ++c) out[(c * r + i) * r + j] = in[c];
        }
    }
  });
}

void CpuOps::conv_transpose2d_forward(float* y, const float* x, const float* w, const float* bias, int64_t B, int64_t H,
                                      int64_t W, int64_t Cin, int64_t Cout, int64_t k, int64_t stride, int64_t pad) {
  LT_CPU_PROFILE("conv_transpose2d_forward");
  const int64_t Ho = (H - 1) * stride - 2 * pad + k, Wo = (W - 1) * stride - 2 * pad + k, taps = Cout * k * k;
  parallel_for(B * Ho, [&](int64_t row) {
    float* out = y + row * Wo * Cout;
    for (int64_t ox = 0; ox < Wo; ++ox)
      for (int64_t c = 0; c < Cout; ++c) out[ox * Cout + c] = bias ? bias[c] : 0.0f;
  });
  // Every input pixel's contribution to its k x k output patch as one GEMM over a band of input
  // rows, cols (rows * W, Cout, k, k) = x (rows * W, Cin) w (Cin, Cout k k), then gathered per
  // output row (each output pixel sums the taps that land on it, in a fixed order).
  const int64_t band = std::clamp<int64_t>((int64_t{16} << 20) / std::max<int64_t>(1, W * taps), 1, H);
  std::vector<float> cols(static_cast<size_t>(band * W * taps));  // (band, W, Cout, k, k)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t r0 = 0; r0 < H; r0 += band) {
      const int64_t rows = std::min(band, H - r0);
      cpu::gemm(
          {cols.data(), x + (b * H + r0) * W * Cin, w, rows * W, taps, Cin, false, false, 1.0f, 0.0f, Cin, taps, taps});
      const int64_t oy0 = std::max<int64_t>(0, r0 * stride - pad),
                    oy1 = std::min<int64_t>(Ho, (r0 + rows - 1) * stride - pad + k);
      parallel_for(oy1 - oy0, [&](int64_t i) {
        const int64_t oy = oy0 + i;
        float* out = y + (b * Ho + oy) * Wo * Cout;
        for (int64_t ky = 0; ky < k; ++ky) {
          const int64_t t = oy + pad - ky;
          if (t < 0 || t % stride || t / stride < r0 || t / stride >= r0 + rows) continue;
          const float* band_row = cols.data() + (t / stride - r0) * W * taps + ky * k;
          for (int64_t ox = 0; ox < Wo; ++ox)
            for (int64_t kx = 0; kx < k; ++kx) {
              const int64_t u = ox + pad - kx;
              if (u < 0 || u % stride || u / stride >= W) continue;
              const float* src = band_row + (u / stride) * taps + kx;
              float* dst = out + ox * Cout;
              for (int64_t c = 0; c < Cout; ++c) dst[c] += src[c * k * k];
            }
        }
      });
    }
}

void CpuOps::conv1x1_forward(float* y, const float* x, const float* w, const float* bias, int64_t B, int64_t Cin,
                             int64_t Cout, int64_t P) {
  LT_CPU_PROFILE("conv1x1_forward", {B, P, Cin, Cout});
  for (int64_t b = 0; b < B; ++b) {
    float* yb = y + b * Cout * P;  // (Cout, P)
    for (int64_t o = 0; o < Cout; ++o) std::fill(yb + o * P, yb + (o + 1) * P, bias ? bias[o] : 0.0f);
    cpu::gemm({yb, w, x + b * Cin * P, Cout, P, Cin, false, false, 1.0f, 1.0f, Cin, P, P});
  }
}

void CpuOps::conv1x1_backward(float* dx, float* dw, float* dbias, const float* dy, const float* x, const float* w,
                              int64_t B, int64_t Cin, int64_t Cout, int64_t P) {
  LT_CPU_PROFILE("conv1x1_backward", {B, P, Cin, Cout});
  for (int64_t b = 0; b < B; ++b) {
    const float* dyb = dy + b * Cout * P;  // (Cout, P)
    const float* xb = x + b * Cin * P;     // (Cin, P)
    if (dx) cpu::gemm({dx + b * Cin * P, w, dyb, Cin, P, Cout, true, false, 1.0f, 1.0f, Cin, P, P});
    if (dw) cpu::gemm({dw, dyb, xb, Cout, Cin, P, false, true, 1.0f, 1.0f, P, P, Cin});
    if (dbias)
      for (int64_t o = 0; o < Cout; ++o) {
        double s = 0.0;
        for (int64_t p = 0; p < P; ++p) s += dyb[o * P + p];
        dbias[o] += static_cast<float>(s);
      }
  }
}

}  // namespace lt::cpu
