#include "paella_vq.h"

#include <algorithm>
#include <stdexcept>

namespace lt {

namespace {
constexpr float kLnEps = 1e-6f;
}

PaellaVQDecoder::PaellaVQDecoder(Ops& ops, const PaellaVQConfig& config) : ops_(ops), config_(config), params_(ops) {
  const PaellaVQConfig& k = config_;
  if (k.latent_channels < 1 || k.out_channels < 1 || k.levels < 1 || k.levels > 16 || k.bottleneck_blocks < 0 ||
      k.up_down_scale_factor < 1 || k.up_down_scale_factor > 64)
    throw std::invalid_argument(
        "VQGAN config: latent_channels, out_channels and up_down_scale_factor (at most 64) must be >= 1, levels in "
        "[1, 16], bottleneck_blocks >= 0");
  if (k.embed_dim >> (k.levels - 1) < 1)
    throw std::invalid_argument("VQGAN config: embed_dim (" + std::to_string(k.embed_dim) +
                                ") must be at least 2^(levels - 1)");
  // c_levels[i] = embed_dim / 2^(levels - 1 - i); the decoder walks them from the deepest.
  auto width = [&](int64_t i) { return k.embed_dim >> (k.levels - 1 - i); };
  params_.add("up_blocks.0.0.weight", {width(k.levels - 1), k.latent_channels, 1, 1});
  params_.add("up_blocks.0.0.bias", {width(k.levels - 1)});
  int64_t index = 1;
  for (int64_t i = 0; i < k.levels; ++i) {
    const int64_t c = width(k.levels - 1 - i);
    for (int64_t j = 0; j < (i == 0 ? k.bottleneck_blocks : 1); ++j) {
      const std::string name = "up_blocks." + std::to_string(index++);
      params_.add(name + ".gammas", {6});
      params_.add(name + ".depthwise.1.weight", {c, 1, 3, 3});
      params_.add(name + ".depthwise.1.bias", {c});
      params_.add(name + ".channelwise.0.weight", {4 * c, c});
      params_.add(name + ".channelwise.0.bias", {4 * c});
      params_.add(name + ".channelwise.2.weight", {c, 4 * c});
      params_.add(name + ".channelwise.2.bias", {c});
      stages_.push_back({name, c, c, false});
    }
    if (i < k.levels - 1) {
      const std::string name = "up_blocks." + std::to_string(index++);
      const int64_t c_out = width(k.levels - 2 - i);
      params_.add(name + ".weight", {c, c_out, 4, 4});
      params_.add(name + ".bias", {c_out});
      stages_.push_back({name, c, c_out, true});
    }
  }
  const int64_t shuffled = k.out_channels * k.up_down_scale_factor * k.up_down_scale_factor;
  params_.add("out_block.0.weight", {shuffled, width(0), 1, 1});
  params_.add("out_block.0.bias", {shuffled});
}

void PaellaVQDecoder::mixing_block(const Stage& s, float* x, float* t, float* hidden, float* mean, float* rstd,
                                   int64_t B, int64_t H, int64_t W) {
  const int64_t c = s.c, P = H * W, rows = B * P;
  float g[6];  // the gammas: (1 + g0, g1) and (1 + g3, g4) modulate the norms, g2 and g5 scale the branches
  ops_.download(g, params_.get(s.name + ".gammas"), 6);
  Scratch scratch(ops_);
  float* ab = scratch.alloc(4 * B * c);  // (2, B, 2c): [a | b] per batch item for each norm
  std::vector<float> host(4 * B * c);
  for (int64_t half = 0; half < 2; ++half)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < c; ++i) {
        host[(half * B + b) * 2 * c + i] = g[3 * half];
        host[(half * B + b) * 2 * c + c + i] = g[3 * half + 1];
      }
  ops_.upload(ab, host.data(), 4 * B * c);

  ops_.layernorm_forward(t, mean, rstd, x, rows, c, kLnEps);
  ops_.modulate_forward(t, t, ab, B, P, c);
  ops_.depthwise_conv_forward(hidden, t, params_.get(s.name + ".depthwise.1.weight"),
                              params_.get(s.name + ".depthwise.1.bias"), B, H, W, c, 3, 1, true, false);
  ops_.axpy(x, hidden, g[2], rows * c);
  ops_.layernorm_forward(t, mean, rstd, x, rows, c, kLnEps);
  ops_.modulate_forward(t, t, ab + 2 * B * c, B, P, c);
  ops_.linear_forward(hidden, t, params_.get(s.name + ".channelwise.0.weight"),
                      params_.get(s.name + ".channelwise.0.bias"), rows, c, 4 * c);
  ops_.gelu_forward(hidden, hidden, rows * 4 * c);
  ops_.linear_forward(t, hidden, params_.get(s.name + ".channelwise.2.weight"),
                      params_.get(s.name + ".channelwise.2.bias"), rows, 4 * c, c);
  ops_.axpy(x, t, g[5], rows * c);
}

void PaellaVQDecoder::decode(float* out, const float* latents, int64_t B, int64_t H, int64_t W) {
  const PaellaVQConfig& k = config_;
  const int64_t lc = k.latent_channels, r = k.up_down_scale_factor;
  // The largest activations: each level doubles the side and halves the width.
  int64_t most = 0;
  for (int64_t i = 0, h = H, w = W; i < k.levels; ++i, h *= 2, w *= 2)
    most = std::max(most, B * h * w * (k.embed_dim >> i));
  Scratch scratch(ops_);
  float* x = scratch.alloc(most);           // (B, h, w, c) the stream
  float* next = scratch.alloc(most);        // (B, 2h, 2w, c / 2) an upsample's output
  float* t = scratch.alloc(most);           // (B, h, w, c)
  float* hidden = scratch.alloc(4 * most);  // (B, h, w, 4c)
  const int64_t most_rows = most / (k.embed_dim >> (k.levels - 1));
  float* mean = scratch.alloc(most_rows);  // (B, h, w)
  float* rstd = scratch.alloc(most_rows);

  std::vector<float> cl(B * H * W * lc);  // (B, H, W, lc)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t ch = 0; ch < lc; ++ch)
      for (int64_t p = 0; p < H * W; ++p) cl[(b * H * W + p) * lc + ch] = latents[(b * lc + ch) * H * W + p];
  float* in = scratch.alloc(B * H * W * lc);
  ops_.upload(in, cl.data(), B * H * W * lc);
  int64_t h = H, w = W, c = k.embed_dim;
  ops_.linear_forward(x, in, params_.get("up_blocks.0.0.weight"), params_.get("up_blocks.0.0.bias"), B * h * w, lc, c);
  for (const Stage& s : stages_) {
    if (!s.upsample) {
      mixing_block(s, x, t, hidden, mean, rstd, B, h, w);
      continue;
    }
    ops_.conv_transpose2d_forward(next, x, params_.get(s.name + ".weight"), params_.get(s.name + ".bias"), B, h, w, s.c,
                                  s.c_out, 4, 2, 1);
    std::swap(x, next);
    h *= 2, w *= 2, c = s.c_out;
  }
  const int64_t shuffled = k.out_channels * r * r;
  float* pixels = scratch.alloc(B * h * w * shuffled);
  ops_.linear_forward(pixels, x, params_.get("out_block.0.weight"), params_.get("out_block.0.bias"), B * h * w, c,
                      shuffled);
  std::vector<float> y(B * h * w * shuffled);  // (B, h, w, out * r * r)
  ops_.download(y.data(), pixels, B * h * w * shuffled);
  // PixelShuffle: channel o * r * r + i * r + j of pixel (py, px) is output pixel (py r + i, px r + j).
  const int64_t Ho = h * r, Wo = w * r;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t py = 0; py < h; ++py)
      for (int64_t px = 0; px < w; ++px) {
        const float* v = y.data() + ((b * h + py) * w + px) * shuffled;
        for (int64_t o = 0; o < k.out_channels; ++o)
          for (int64_t i = 0; i < r; ++i)
            for (int64_t j = 0; j < r; ++j)
              out[((b * k.out_channels + o) * Ho + py * r + i) * Wo + px * r + j] = v[(o * r + i) * r + j];
      }
}

}  // namespace lt
