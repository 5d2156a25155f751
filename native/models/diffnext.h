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
#include <utility>
#include <vector>

#include "../ops.h"
#include "arena.h"
#include "param_store.h"

namespace lt {

// config.json, as diffusers reads it (JS applies its defaults), and the storage type of the
// Linear layers' weights (bf16/f16: their GEMMs and the attention in that type, as mixed
// precision runs the prior).
struct DiffNeXtConfig {
  int64_t c_in = 0, c_out = 0, c_r = 0, patch_size = 0, c_cond = 0, effnet_embd = 0, clip_embd = 0, kernel_size = 0;
  std::vector<int64_t> c_hidden, nhead, blocks;  // per level
  std::vector<std::string> level_config;         // per level: "C", "T" and "A" in order
  std::vector<bool> inject_effnet;               // per level
  DType weight_type = DType::f32;
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
  // A sampler calls this with the same effnet and clip at every step: their share of the work
  // (the resized, mapped effnet of every level, every attention's keys and values from the
  // text) is kept and reused while they, the shapes and the weights stay the same.
  void forward(float* out, const float* x, const float* r, const float* effnet, const float* clip, int64_t B, int64_t H,
               int64_t W, int64_t He, int64_t We, int64_t T);
  // Bytes of the buffers planned for the last call's shapes (0 before any call).
  int64_t activation_bytes() const { return arena_.bytes(); }
  std::mutex& mutex() { return mutex_; }

 private:
  struct Linear {
    TensorRef w{nullptr};      // (out, in), weight_type
    const float* b = nullptr;  // (out)
  };
  struct Module {
    enum Kind { kDown, kRes, kTimestep, kAttn, kUp };
    Module(Kind kind, std::string name, int64_t c, int64_t c_skip, int64_t nhead, int64_t c_next)
        : kind(kind), name(std::move(name)), c(c), c_skip(c_skip), nhead(nhead), c_next(c_next) {}
    Kind kind;
    std::string name;                  // "down_blocks.1.2"
    int64_t c, c_skip, nhead, c_next;  // c_next: a down or up block's output channels
    // Resolved weights, those of the module's kind set.
    const float *depthwise_w = nullptr, *depthwise_b = nullptr;  // (c, 1, k, k), (c)
    const float *grn_gamma = nullptr, *grn_beta = nullptr;       // (4c)
    const float *conv_w = nullptr, *conv_b = nullptr;            // up: (c, c_next, 2, 2), (c_next)
    Linear fc1, fc2;                                             // (4c, c + c_skip), (c, 4c)
    Linear mapper;                                               // timestep: (2c, c_r)
    Linear kv, q, k, v, out;                                     // (c, c_cond), (c, c) each
    Linear scaler;                                               // down: (c_next, 4c), the 2x2 conv
    float* keys_values = nullptr;                                // attention: kv(SiLU(clip)) (B, T, c)
  };
  struct Level {
    std::vector<Module> modules;
    int64_t mapper;  // effnet_mappers index, or -1
  };
  struct Shape {
    int64_t B, H, W, He, We, T;
    bool operator==(const Shape& o) const {
      return B == o.B && H == o.H && W == o.W && He == o.He && We == o.We && T == o.T;
    }
  };
  // Views into the arena. Channels last: P is a level's pixels, c its width.
  struct Buffers {
    float *x, *t, *u, *q, *o;                  // (B, P, c) each: the stream and its scratch
    float* cat;                                // (B, P, c + c_skip)
    float *hidden, *hidden2;                   // (B, P, 4c)
    float *src, *k, *v;                        // (B, P + T, c)
    float* lse;                                // (B, nhead, P)
    float *mean, *rstd;                        // (B, max(P0, T))
    float* ab;                                 // (B, 2c)
    float *patches, *r_embed;                  // (B, P0, c_in p p), (B, c_r)
    std::vector<float*> level_out;             // per level (B, P, c): the down path's outputs
    float* skip_cat;                           // (B, P, c + c_cond)
    float* clf;                                // (B, P0, 2 c_out p p)
    std::vector<float*> effnet_in;             // per level (B, P, effnet_embd): effnet resized, or null
    std::vector<float*> effnet_mapped;         // per mapper (B, P, c_cond), or null
    float *clip_in, *clip_mapped, *silu_clip;  // (B, T, clip_embd), (B, T, c_cond) twice
  };
  void add_linear(const std::string& name, int64_t in, int64_t out);
  void add_module(std::vector<Module>& list, char type, const std::string& name, int64_t c, int64_t c_skip,
                  int64_t nhead);
  void resolve();  // points every module's weights at params_, unless they already do
  void resolve(Module& m);
  void plan(const Shape& s);
  void condition(const float* effnet, const float* clip);
  void run(const Module& m, int64_t B, int64_t& h, int64_t& w, const float* skip);

  Ops& ops_;
  DiffNeXtConfig config_;
  ParamStore params_;
  std::vector<Level> down_, up_;  // up_[i] is level n - 1 - i
  uint64_t resolved_generation_ = ~uint64_t{0};
  Linear clip_mapper_;
  std::vector<Linear> effnet_mappers_;  // per mapper index, (c_cond, effnet_embd)
  Linear embedding_, clf_;              // (c_hidden[0], c_in p p), (2 c_out p p, c_hidden[0])
  Arena arena_;
  Shape planned_{};
  Buffers buf_{};
  // The effnet and clip the kept conditioning was computed from, and the weights' version.
  std::vector<float> conditioned_effnet_, conditioned_clip_;
  uint64_t conditioned_version_ = ~uint64_t{0};
  std::mutex mutex_;
};

}  // namespace lt
