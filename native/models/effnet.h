// The Würstchen EfficientNetEncoder, forward only: torchvision's efficientnet_v2 `features`
// (fused-MBConv and MBConv stages with squeeze-excitation, SiLU) and the mapper, with every
// batch norm already folded into its convolution by the loader (src/models/image-encoder.ts).
// Channels last inside. Parameter names are torchvision's conv names under backbone./mapper.,
// each with .weight in (Cout, k, k, Cin) layout ((C, k, k) for depthwise) and a .bias.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "../ops.h"
#include "param_store.h"

namespace lt {

struct EffNetStage {
  bool fused;  // FusedMBConv (stages 1-3 of v2-s) or MBConv with squeeze-excitation
  int64_t expand, kernel, stride, in, out, layers;
};

struct EffNetConfig {
  std::vector<EffNetStage> stages;
  int64_t last_channel = 1280, latent_channels = 16;
};

class EffNetEncoder {
 public:
  EffNetEncoder(Ops& ops, const EffNetConfig& config);
  ~EffNetEncoder();
  std::vector<NamedShape> parameters() const { return params_.list(); }
  void set_parameter(const std::string& name, const float* host, int64_t n) { params_.set(name, host, n); }
  ParamStore::NonFinite load_parameter(const std::string& name, const std::shared_ptr<WeightFile>& file, int64_t offset,
                                       DType type) {
    return params_.load(name, file, offset, type);
  }
  const EffNetConfig& config() const { return config_; }
  // out (B, latent, H/32, W/32) host, channels first; images (B, 3, H, W) host, normalised.
  void forward(float* out, const float* images, int64_t B, int64_t H, int64_t W);
  std::mutex& mutex() { return mutex_; }

 private:
  struct Conv {
    std::string name;
    int64_t in, out, k, stride;
    bool depthwise;
  };
  struct Block {
    bool fused, residual;
    int64_t in, exp, out, k, stride, squeeze;
    std::string prefix;
  };
  void conv(const std::string& name, int64_t in, int64_t out, int64_t k, bool depthwise);
  void run_conv(const std::string& name, float* y, const float* x, int64_t B, int64_t H, int64_t W, int64_t in,
                int64_t out, int64_t k, int64_t stride, bool depthwise, bool silu, const float* residual = nullptr);

  Ops& ops_;
  EffNetConfig config_;
  ParamStore params_;
  std::vector<Block> blocks_;
  int64_t stem_channels_ = 0;
  std::mutex mutex_;
};

// torchvision's _make_divisible(v * expand, 8): the expanded channel count of a block.
int64_t effnet_expanded_channels(int64_t in, int64_t expand);

}  // namespace lt
