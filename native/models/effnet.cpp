#include "effnet.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace lt {

int64_t effnet_expanded_channels(int64_t in, int64_t expand) {
  const double v = static_cast<double>(in * expand);
  int64_t out = std::max<int64_t>(8, static_cast<int64_t>(v + 4) / 8 * 8);
  if (static_cast<double>(out) < 0.9 * v) out += 8;
  return out;
}

void EffNetEncoder::conv(const std::string& name, int64_t in, int64_t out, int64_t k, bool depthwise) {
  if (depthwise)
    params_.add(name + ".weight", {out, k, k});
  else
    params_.add(name + ".weight", {out, k, k, in});
  params_.add(name + ".bias", {out});
}

// The forward pass sizes its buffers and its output (H/32, W/32) from these invariants, so a
// config that breaks one would write past them: refused here instead.
static constexpr int64_t kMaxChannels = 65536;

static void check_config(const EffNetConfig& c) {
  auto fail = [](const std::string& why) { throw std::invalid_argument("image encoder config: " + why); };
  if (c.stages.empty()) fail("no stages");
  int64_t downsampling = 2;  // the stem
  for (size_t i = 0; i < c.stages.size(); ++i) {
    const EffNetStage& st = c.stages[i];
    const std::string name = "stages[" + std::to_string(i) + "]";
    if (st.stride != 1 && st.stride != 2) fail(name + ".stride must be 1 or 2");
    if (st.kernel % 2 == 0 || st.kernel > 15) fail(name + ".kernel must be odd and at most 15");
    if (st.in > kMaxChannels || st.out > kMaxChannels || st.expand > 64 || st.layers > 1024)
      fail(name + ": in and out at most 65536, expand at most 64, layers at most 1024");
    if (i > 0 && st.in != c.stages[i - 1].out)
      fail(name + ".in is " + std::to_string(st.in) + ", but the stage before puts out " +
           std::to_string(c.stages[i - 1].out));
    downsampling *= st.stride;
  }
  if (c.last_channel > kMaxChannels || c.latent_channels > kMaxChannels)
    fail("last_channel and latent_channels at most 65536");
  if (downsampling != 32)
    fail("the stem and the stages' strides shrink images " + std::to_string(downsampling) +
         " times, and the encoder's output is 1/32 of its input");
}

EffNetEncoder::EffNetEncoder(Ops& ops, const EffNetConfig& config) : ops_(ops), config_(config), params_(ops) {
  check_config(config_);
  stem_channels_ = config_.stages.front().in;
  conv("backbone.0.0", 3, stem_channels_, 3, false);
  int64_t index = 1;
  for (const EffNetStage& st : config_.stages) {
    for (int64_t j = 0; j < st.layers; ++j) {
      Block b;
      b.fused = st.fused;
      b.in = j == 0 ? st.in : st.out;
      b.out = st.out;
      b.k = st.kernel;
      b.stride = j == 0 ? st.stride : 1;
      b.exp = effnet_expanded_channels(b.in, st.expand);
      b.residual = b.stride == 1 && b.in == b.out;
      b.squeeze = std::max<int64_t>(1, b.in / 4);
      b.prefix = "backbone." + std::to_string(index) + "." + std::to_string(j) + ".block.";
      if (b.fused) {
        if (b.exp != b.in) {
          conv(b.prefix + "0.0", b.in, b.exp, b.k, false);
          conv(b.prefix + "1.0", b.exp, b.out, 1, false);
        } else {
          conv(b.prefix + "0.0", b.in, b.out, b.k, false);
        }
      } else {
        const bool expands = b.exp != b.in;
        const std::string dw = b.prefix + (expands ? "1.0" : "0.0");
        const std::string se = b.prefix + (expands ? "2." : "1.");
        const std::string project = b.prefix + (expands ? "3.0" : "2.0");
        if (expands) conv(b.prefix + "0.0", b.in, b.exp, 1, false);
        conv(dw, b.exp, b.exp, b.k, true);
        conv(se + "fc1", b.exp, b.squeeze, 1, false);
        conv(se + "fc2", b.squeeze, b.exp, 1, false);
        conv(project, b.exp, b.out, 1, false);
      }
      blocks_.push_back(b);
    }
    ++index;
  }
  conv("backbone." + std::to_string(index) + ".0", config_.stages.back().out, config_.last_channel, 1, false);
  conv("mapper.0", config_.last_channel, config_.latent_channels, 1, false);
}

EffNetEncoder::~EffNetEncoder() = default;

void EffNetEncoder::run_conv(const std::string& name, float* y, const float* x, int64_t B, int64_t H, int64_t W,
                             int64_t in, int64_t out, int64_t k, int64_t stride, bool depthwise, bool silu,
                             const float* residual) {
  const float* w = params_.get(name + ".weight");
  const float* b = params_.get(name + ".bias");
  if (depthwise)
    ops_.depthwise_conv_forward(y, x, w, b, B, H, W, out, k, stride, false, silu);
  else
    ops_.conv2d_forward(y, x, w, b, residual, B, H, W, in, out, k, stride, silu);
}

void EffNetEncoder::forward(float* out, const float* images, int64_t B, int64_t H, int64_t W) {
  if (H % 32 || W % 32)
    throw std::invalid_argument("image encoder: image size " + std::to_string(H) + "x" + std::to_string(W) +
                                " is not a multiple of 32");
  // The largest tensor any layer reads or writes sizes the four working buffers.
  int64_t cap = B * H * W * 3, h = (H + 1) / 2, w = (W + 1) / 2, widest_se = 1;
  cap = std::max(cap, B * h * w * stem_channels_);
  for (const Block& b : blocks_) {
    const int64_t ho = (h + b.stride - 1) / b.stride, wo = (w + b.stride - 1) / b.stride;
    cap = std::max({cap, B * h * w * b.exp, B * ho * wo * b.exp, B * ho * wo * b.out});
    widest_se = std::max(widest_se, b.exp);
    h = ho;
    w = wo;
  }
  cap = std::max(cap, B * h * w * config_.last_channel);
  const int64_t widest = widest_se;
  Scratch scratch(ops_);
  float* buf[4] = {scratch.alloc(cap), scratch.alloc(cap), scratch.alloc(cap), scratch.alloc(cap)};
  float* se_mean = scratch.alloc(B * widest);
  float* se_hidden = scratch.alloc(B * widest);

  float* images_dev = buf[1];
  ops_.upload(images_dev, images, B * 3 * H * W);
  float* x = buf[0];
  ops_.transpose_cp(x, images_dev, B, 3, H * W);
  float* y = buf[1];
  run_conv("backbone.0.0", y, x, B, H, W, 3, stem_channels_, 3, 2, false, true);
  H = (H + 1) / 2;
  W = (W + 1) / 2;
  std::swap(x, y);
  for (const Block& b : blocks_) {
    const int64_t Ho = (H + b.stride - 1) / b.stride, Wo = (W + b.stride - 1) / b.stride;
    float* t = buf[2];
    float* u = buf[3];
    // A block ending on a projection (no activation) adds its skip connection as that writes,
    // over the block's input in place; the fused block without expansion ends on SiLU, and adds
    // it after.
    const bool projection_adds = b.residual && !(b.fused && b.exp == b.in);
    float* projected = projection_adds ? x : y;
    const float* skip = projection_adds ? x : nullptr;
    if (b.fused) {
      if (b.exp != b.in) {
        run_conv(b.prefix + "0.0", t, x, B, H, W, b.in, b.exp, b.k, b.stride, false, true);
        run_conv(b.prefix + "1.0", projected, t, B, Ho, Wo, b.exp, b.out, 1, 1, false, false, skip);
      } else {
        run_conv(b.prefix + "0.0", y, x, B, H, W, b.in, b.out, b.k, b.stride, false, true);
      }
    } else {
      const bool expands = b.exp != b.in;
      const float* expanded = x;
      if (expands) {
        run_conv(b.prefix + "0.0", t, x, B, H, W, b.in, b.exp, 1, 1, false, true);
        expanded = t;
      }
      run_conv(b.prefix + (expands ? "1.0" : "0.0"), u, expanded, B, H, W, b.exp, b.exp, b.k, b.stride, true, true);
      const std::string se = b.prefix + (expands ? "2." : "1.");
      ops_.channel_mean(se_mean, u, B, Ho * Wo, b.exp);
      ops_.linear_forward(se_hidden, se_mean, params_.get(se + "fc1.weight"), params_.get(se + "fc1.bias"), B, b.exp,
                          b.squeeze);
      ops_.silu_forward(se_hidden, se_hidden, B * b.squeeze);
      ops_.linear_forward(se_mean, se_hidden, params_.get(se + "fc2.weight"), params_.get(se + "fc2.bias"), B,
                          b.squeeze, b.exp);
      ops_.sigmoid_forward(se_mean, se_mean, B * b.exp);
      ops_.scale_channels(u, u, se_mean, B, Ho * Wo, b.exp);
      run_conv(b.prefix + (expands ? "3.0" : "2.0"), projected, u, B, Ho, Wo, b.exp, b.out, 1, 1, false, false, skip);
    }
    // Stochastic depth is the identity in eval mode.
    if (b.residual && !projection_adds) ops_.axpy(y, x, 1.0f, B * Ho * Wo * b.out);
    if (!projection_adds) std::swap(x, y);
    H = Ho;
    W = Wo;
  }
  const std::string head = "backbone." + std::to_string(config_.stages.size() + 1) + ".0";
  run_conv(head, y, x, B, H, W, config_.stages.back().out, config_.last_channel, 1, 1, false, true);
  run_conv("mapper.0", x, y, B, H, W, config_.last_channel, config_.latent_channels, 1, 1, false, false);
  // channels last (B, P, C) -> channels first (B, C, P): transpose_cp with the roles swapped
  ops_.transpose_cp(y, x, B, H * W, config_.latent_channels);
  ops_.download(out, y, B * config_.latent_channels * H * W);
}

}  // namespace lt
