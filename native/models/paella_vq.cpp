#include "paella_vq.h"

#include <algorithm>
#include <stdexcept>

namespace lt {

namespace {
constexpr float kLnEps = 1e-6f;
}

PaellaVQDecoder::PaellaVQDecoder(Ops& ops, const PaellaVQConfig& config)
    : ops_(ops), config_(config), params_(ops), arena_(ops) {
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

void PaellaVQDecoder::resolve() {
  if (resolved_generation_ == params_.generation()) return;
  auto P = [&](const std::string& name) -> const float* { return params_.get(name); };
  in_w_ = P("up_blocks.0.0.weight");
  in_b_ = P("up_blocks.0.0.bias");
  out_w_ = P("out_block.0.weight");
  out_b_ = P("out_block.0.bias");
  for (Stage& s : stages_) {
    if (s.upsample) {
      s.w = P(s.name + ".weight");
      s.b = P(s.name + ".bias");
      continue;
    }
    s.w = P(s.name + ".depthwise.1.weight");
    s.b = P(s.name + ".depthwise.1.bias");
    s.fc1_w = P(s.name + ".channelwise.0.weight");
    s.fc1_b = P(s.name + ".channelwise.0.bias");
    s.fc2_w = P(s.name + ".channelwise.2.weight");
    s.fc2_b = P(s.name + ".channelwise.2.bias");
  }
  resolved_generation_ = params_.generation();
}

// The largest activations: each level doubles the side and halves the width.
void PaellaVQDecoder::plan(const Shape& s) {
  if (!arena_.empty() && s == planned_) return;
  const PaellaVQConfig& k = config_;
  int64_t most = 0, rows = 0;
  for (int64_t i = 0, h = s.H, w = s.W; i < k.levels; ++i, h *= 2, w *= 2) {
    most = std::max(most, s.B * h * w * (k.embed_dim >> i));
    rows = s.B * h * w;
  }
  ArenaLayout a;
  a.take(in_, s.B * s.H * s.W * k.latent_channels);
  for (float** p : {&x_, &next_, &t_}) a.take(*p, most);
  a.take(hidden_, 4 * most);
  a.take(mean_, rows);
  a.take(rstd_, rows);
  a.take(pixels_, rows * k.out_channels * k.up_down_scale_factor * k.up_down_scale_factor);
  for (Stage& st : stages_)
    if (!st.upsample) a.take(st.ab, 4 * s.B * st.c);
  arena_.allocate(a);
  planned_ = s;
  filled_version_ = ~uint64_t{0};
}

void PaellaVQDecoder::fill_modulations() {
  if (filled_version_ == params_.version()) return;
  const int64_t B = planned_.B;
  for (Stage& s : stages_) {
    if (s.upsample) continue;
    ops_.download(s.gammas, params_.get(s.name + ".gammas"), 6);
    std::vector<float> host(4 * B * s.c);  // (2, B, 2c)
    for (int64_t half = 0; half < 2; ++half)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < s.c; ++i) {
          host[(half * B + b) * 2 * s.c + i] = s.gammas[3 * half];
          host[(half * B + b) * 2 * s.c + s.c + i] = s.gammas[3 * half + 1];
        }
    ops_.upload(s.ab, host.data(), 4 * B * s.c);
  }
  filled_version_ = params_.version();
}

void PaellaVQDecoder::mixing_block(const Stage& s, float* x, int64_t B, int64_t H, int64_t W) {
  const int64_t c = s.c, P = H * W, rows = B * P;
  ops_.layernorm_forward(t_, mean_, rstd_, x, rows, c, kLnEps);
  ops_.modulate_forward(t_, t_, s.ab, B, P, c);
  ops_.depthwise_conv_forward(hidden_, t_, s.w, s.b, B, H, W, c, 3, 1, true, false);
  ops_.axpy(x, hidden_, s.gammas[2], rows * c);
  ops_.layernorm_forward(t_, mean_, rstd_, x, rows, c, kLnEps);
  ops_.modulate_forward(t_, t_, s.ab + 2 * B * c, B, P, c);
  ops_.linear_forward(hidden_, t_, s.fc1_w, s.fc1_b, rows, c, 4 * c);
  ops_.gelu_forward(hidden_, hidden_, rows * 4 * c);
  ops_.linear_forward(t_, hidden_, s.fc2_w, s.fc2_b, rows, 4 * c, c);
  ops_.axpy(x, t_, s.gammas[5], rows * c);
}

void PaellaVQDecoder::decode(float* out, const float* latents, int64_t B, int64_t H, int64_t W) {
  const PaellaVQConfig& k = config_;
  const int64_t lc = k.latent_channels, r = k.up_down_scale_factor;
  resolve();
  plan({B, H, W});
  fill_modulations();
  std::vector<float> cl(B * H * W * lc);  // (B, H, W, lc)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t ch = 0; ch < lc; ++ch)
      for (int64_t p = 0; p < H * W; ++p) cl[(b * H * W + p) * lc + ch] = latents[(b * lc + ch) * H * W + p];
  ops_.upload(in_, cl.data(), B * H * W * lc);
  int64_t h = H, w = W, c = k.embed_dim;
  float *x = x_, *next = next_;
  ops_.linear_forward(x, in_, in_w_, in_b_, B * h * w, lc, c);
  for (const Stage& s : stages_) {
    if (!s.upsample) {
      mixing_block(s, x, B, h, w);
      continue;
    }
    ops_.conv_transpose2d_forward(next, x, s.w, s.b, B, h, w, s.c, s.c_out, 4, 2, 1);
    std::swap(x, next);
    h *= 2, w *= 2, c = s.c_out;
  }
  const int64_t shuffled = k.out_channels * r * r;
  ops_.linear_forward(pixels_, x, out_w_, out_b_, B * h * w, c, shuffled);
  std::vector<float> y(B * h * w * shuffled);  // (B, h, w, out * r * r)
  ops_.download(y.data(), pixels_, B * h * w * shuffled);
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
