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
#include <vector>

#include "../ops.h"
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
    std::string name;  // "up_blocks.N"
    int64_t c, c_out;  // input channels; output channels of an upsample
    bool upsample;
  };
  // x (B, H, W, c) += the block's two branches; t (B*H*W, c), hidden (B*H*W, 4c), mean and rstd
  // (B*H*W) are scratch.
  void mixing_block(const Stage& s, float* x, float* t, float* hidden, float* mean, float* rstd, int64_t B, int64_t H,
                    int64_t W);

  Ops& ops_;
  PaellaVQConfig config_;
  ParamStore params_;
  std::vector<Stage> stages_;
  std::mutex mutex_;
};

}  // namespace lt
