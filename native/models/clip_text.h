// transformers' CLIPTextModel, forward only (the frozen text encoder): token and position
// embeddings, pre-LN transformer blocks with causal plus padding masks, final LayerNorm;
// returns last_hidden_state. Parameter names as in its state dict (text_model.…).
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../ops.h"
#include "arena.h"
#include "param_store.h"

namespace lt {

struct ClipTextConfig {
  int64_t vocab_size = 49408, hidden = 1280, layers = 32, heads = 20, intermediate = 5120, max_positions = 77;
  float eps = 1e-5f;
  bool quick_gelu = false;  // hidden_act "quick_gelu" (OpenAI CLIP) or "gelu" (OpenCLIP bigG)
};

class ClipTextModel {
 public:
  ClipTextModel(Ops& ops, const ClipTextConfig& config);
  const ClipTextConfig& config() const { return config_; }
  std::vector<NamedShape> parameters() const { return params_.list(); }
  void set_parameter(const std::string& name, const float* host, int64_t n) { params_.set(name, host, n); }
  ParamStore::NonFinite load_parameter(const std::string& name, const std::shared_ptr<WeightFile>& file, int64_t offset,
                                       DType type) {
    return params_.load(name, file, offset, type);
  }
  // out (B, T, hidden) host; ids (B, T) host, each < vocab_size; mask (B, T) host, 1 = token.
  void forward(float* out, const int32_t* ids, const uint8_t* mask, int64_t B, int64_t T);
  std::mutex& mutex() { return mutex_; }

 private:
  // One encoder layer's parameters, resolved before a forward when loading moved them.
  struct Layer {
    const float *ln1_w, *ln1_b;                                      // (hidden)
    const float *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *out_w, *out_b;  // (hidden, hidden), (hidden)
    const float *ln2_w, *ln2_b;                                      // (hidden)
    const float *fc1_w, *fc1_b;                                      // (intermediate, hidden), (intermediate)
    const float *fc2_w, *fc2_b;                                      // (hidden, intermediate), (hidden)
  };
  void resolve();  // points the fields below at params_, unless they already do
  uint64_t resolved_generation_ = ~uint64_t{0};
  void plan(int64_t B, int64_t T);
  Ops& ops_;
  ClipTextConfig config_;
  ParamStore params_;
  const float *token_embedding_ = nullptr, *position_embedding_ = nullptr;  // (vocab, hidden), (positions, hidden)
  const float *final_ln_w_ = nullptr, *final_ln_b_ = nullptr;               // (hidden)
  std::vector<Layer> layers_;
  Arena arena_;
  int64_t planned_B_ = 0, planned_T_ = 0;
  float *x_ = nullptr, *h_ = nullptr, *q_ = nullptr, *k_ = nullptr, *v_ = nullptr, *o_ = nullptr, *mlp_ = nullptr,
        *act_ = nullptr;
  std::mutex mutex_;
};

}  // namespace lt
