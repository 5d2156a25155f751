// The decoder half of diffusers' PaellaVQModel (the Würstchen VQGAN, Stage A), forward only:
// decode(latents) with force_not_quantize, as WuerstchenDecoderPipeline calls it. A 1x1
// convolution to the deepest width, MixingResidualBlocks (LayerNorm, replication-padded
// depthwise 3x3, LayerNorm, GELU MLP, each branch scaled by the block's six gammas) with a
// transposed convolution (k 4, stride 2) between levels, then a 1x1 convolution and a pixel
// shuffle. Channels last inside; parameter names and layouts are diffusers' (up_blocks.*,
// out_block.0.*), the encoder's are not parameters of this model.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "../ops.h"
#include "arena.h"
#include "param_store.h"

namespace lt {

// PaellaVQModel's config.json keys that the decoder uses.
struct PaellaVQConfig {
  int64_t latent_channels = 0, out_channels = 0, levels = 0, bottleneck_blocks = 0, embed_dim = 0,
          up_down_scale_factor = 0;
};

class PaellaVQDecoder {
 public:
  PaellaVQDecoder(Ops& ops, const PaellaVQConfig& config);
  const PaellaVQConfig& config() const { return config_; }
  std::vector<NamedShape> parameters() const { return params_.list(); }
  void set_parameter(const std::string& name, const float* host, int64_t n) { params_.set(name, host, n); }
  ParamStore::NonFinite load_parameter(const std::string& name, const std::shared_ptr<WeightFile>& file, int64_t offset,
                                       DType type) {
    return params_.load(name, file, offset, type);
  }
  // The output's height (or width) for latents of height (or width) n.
  int64_t output_size(int64_t n) const {
    return n * (int64_t{1} << (config_.levels - 1)) * config_.up_down_scale_factor;
  }
  // out (B, out_channels, output_size(H), output_size(W)) host, not clamped; latents
  // (B, latent_channels, H, W) host, already multiplied by the config's scale_factor.
  void decode(float* out, const float* latents, int64_t B, int64_t H, int64_t W);
  std::mutex& mutex() { return mutex_; }

 private:
  // One entry of up_blocks: a MixingResidualBlock or (upsample) a ConvTranspose2d.
  struct Stage {
    Stage(std::string name, int64_t c, int64_t c_out, bool upsample)
        : name(std::move(name)), c(c), c_out(c_out), upsample(upsample) {}
    std::string name;  // "up_blocks.N"
    int64_t c, c_out;  // input channels; output channels of an upsample
    bool upsample;
    // Resolved weights. A block: depthwise (c, 1, 3, 3) and (c), fc1 (4c, c) and (4c), fc2
    // (c, 4c) and (c), its gammas on the host; an upsample: w (c, c_out, 4, 4), b (c_out).
    const float *w = nullptr, *b = nullptr;
    const float *fc1_w = nullptr, *fc1_b = nullptr, *fc2_w = nullptr, *fc2_b = nullptr;
    float gammas[6] = {};  // (1 + g0, g1) and (1 + g3, g4) modulate the norms, g2 and g5 scale the branches
    float* ab = nullptr;   // (2, B, 2c): the norms' [a | b] per batch item, in the arena
  };
  struct Shape {
    int64_t B, H, W;
    bool operator==(const Shape& o) const { return B == o.B && H == o.H && W == o.W; }
  };
  void resolve();  // points the stages at params_, unless they already do
  void plan(const Shape& s);
  // The arena's ab of every block from its gammas, when the weights or the plan changed.
  void fill_modulations();
  // x (B, H, W, c) += the block's two branches.
  void mixing_block(const Stage& s, float* x, int64_t B, int64_t H, int64_t W);

  Ops& ops_;
  PaellaVQConfig config_;
  ParamStore params_;
  std::vector<Stage> stages_;
  uint64_t resolved_generation_ = ~uint64_t{0}, filled_version_ = ~uint64_t{0};
  const float *in_w_ = nullptr, *in_b_ = nullptr;    // (embed_dim, latent_channels, 1, 1), (embed_dim)
  const float *out_w_ = nullptr, *out_b_ = nullptr;  // (out r r, c_levels[0], 1, 1), (out r r)
  Arena arena_;
  Shape planned_{};
  float* in_ = nullptr;                      // (B, H, W, latent_channels)
  float *x_ = nullptr, *next_ = nullptr;     // (B, h, w, c): the stream, an upsample's output
  float *t_ = nullptr, *hidden_ = nullptr;   // (B, h, w, c), (B, h, w, 4c)
  float *mean_ = nullptr, *rstd_ = nullptr;  // (B, h, w)
  float* pixels_ = nullptr;                  // (B, Ho / r, Wo / r, out r r)
  std::mutex mutex_;
};

}  // namespace lt
