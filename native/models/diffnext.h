// Würstchen's Stage B, diffusers' WuerstchenDiffNeXt, forward only (eval mode: no dropout): the
// decoder that turns the prior's image embeddings into VQGAN latents. Patch embedding by pixel
// unshuffle, then a U of levels (c_hidden[i] channels, each halving the side) built from
// ResBlockStageB (depthwise conv, LayerNorm, channels-last MLP with GRN, skip concatenation),
// TimestepBlock and AttnBlock (self-attention over the pixels and the mapped CLIP tokens), the
// effnet embedding injected per level after an antialiased bicubic resize, and the output clf.
// Channels last inside; parameter names and layouts are diffusers'.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../ops.h"
#include "param_store.h"

namespace lt {

// config.json, as diffusers reads it (JS applies its defaults).
struct DiffNeXtConfig {
  int64_t c_in = 0, c_out = 0, c_r = 0, patch_size = 0, c_cond = 0, effnet_embd = 0, clip_embd = 0, kernel_size = 0;
  std::vector<int64_t> c_hidden, nhead, blocks;  // per level
  std::vector<std::string> level_config;         // per level: "C", "T" and "A" in order
  std::vector<bool> inject_effnet;               // per level
};

class DiffNeXt {
 public:
  DiffNeXt(Ops& ops, const DiffNeXtConfig& config);
  const DiffNeXtConfig& config() const { return config_; }
  std::vector<NamedShape> parameters() const { return params_.list(); }
  void set_parameter(const std::string& name, const float* host, int64_t n) { params_.set(name, host, n); }
  ParamStore::NonFinite load_parameter(const std::string& name, const std::shared_ptr<WeightFile>& file, int64_t offset,
                                       DType type) {
    return params_.load(name, file, offset, type);
  }
  // H and W must be multiples of this.
  int64_t side_multiple() const { return config_.patch_size << (config_.c_hidden.size() - 1); }
  // out (B, c_out, H, W) = the predicted noise (x - a) / b; x (B, c_in, H, W), r (B), effnet
  // (B, effnet_embd, He, We), clip (B, T, clip_embd): all host, channels first as diffusers.
  void forward(float* out, const float* x, const float* r, const float* effnet, const float* clip, int64_t B, int64_t H,
               int64_t W, int64_t He, int64_t We, int64_t T);
  std::mutex& mutex() { return mutex_; }

 private:
  struct Module {
    enum Kind { kDown, kRes, kTimestep, kAttn, kUp } kind;
    std::string name;                  // "down_blocks.1.2"
    int64_t c, c_skip, nhead, c_next;  // c_next: a down or up block's output channels
  };
  struct Level {
    std::vector<Module> modules;
    int64_t mapper;  // effnet_mappers index, or -1
  };
  struct Buffers;
  void add_linear(const std::string& name, int64_t in, int64_t out);
  void add_module(std::vector<Module>& list, char type, const std::string& name, int64_t c, int64_t c_skip,
                  int64_t nhead);
  void run(const Module& m, Buffers& buf, int64_t B, int64_t& h, int64_t& w, const float* skip);

  Ops& ops_;
  DiffNeXtConfig config_;
  ParamStore params_;
  std::vector<Level> down_, up_;  // up_[i] is level n - 1 - i
  std::mutex mutex_;
};

}  // namespace lt
