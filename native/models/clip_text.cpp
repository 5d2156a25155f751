#include "clip_text.h"

#include <cmath>
#include <stdexcept>
#include <vector>

namespace lt {

namespace {
std::string layer(int64_t i) { return "text_model.encoder.layers." + std::to_string(i) + "."; }
}  // namespace

ClipTextModel::ClipTextModel(Ops& ops, const ClipTextConfig& config)
    : ops_(ops), config_(config), params_(ops), arena_(ops) {
  const ClipTextConfig& k = config_;
  if (k.hidden % k.heads != 0)
    throw std::invalid_argument("text encoder config: hidden_size (" + std::to_string(k.hidden) +
                                ") must be divisible by num_attention_heads (" + std::to_string(k.heads) + ")");
  params_.add("text_model.embeddings.token_embedding.weight", {k.vocab_size, k.hidden});
  params_.add("text_model.embeddings.position_embedding.weight", {k.max_positions, k.hidden});
  auto linear = [&](const std::string& name, int64_t in, int64_t out) {
    params_.add(name + ".weight", {out, in});
    params_.add(name + ".bias", {out});
  };
  for (int64_t i = 0; i < k.layers; ++i) {
    for (const char* p : {"q_proj", "k_proj", "v_proj", "out_proj"})
      linear(layer(i) + "self_attn." + p, k.hidden, k.hidden);
    linear(layer(i) + "mlp.fc1", k.hidden, k.intermediate);
    linear(layer(i) + "mlp.fc2", k.intermediate, k.hidden);
    for (const char* n : {"layer_norm1", "layer_norm2"}) {
      params_.add(layer(i) + n + ".weight", {k.hidden});
      params_.add(layer(i) + n + ".bias", {k.hidden});
    }
  }
  params_.add("text_model.final_layer_norm.weight", {k.hidden});
  params_.add("text_model.final_layer_norm.bias", {k.hidden});
}

void ClipTextModel::resolve() {
  if (resolved_generation_ == params_.generation()) return;
  auto P = [&](const std::string& name) -> const float* { return params_.get(name); };
  token_embedding_ = P("text_model.embeddings.token_embedding.weight");
  position_embedding_ = P("text_model.embeddings.position_embedding.weight");
  final_ln_w_ = P("text_model.final_layer_norm.weight");
  final_ln_b_ = P("text_model.final_layer_norm.bias");
  layers_.clear();
  for (int64_t i = 0; i < config_.layers; ++i) {
    const std::string L = layer(i), A = L + "self_attn.";
    layers_.push_back({P(L + "layer_norm1.weight"), P(L + "layer_norm1.bias"), P(A + "q_proj.weight"),
                       P(A + "q_proj.bias"), P(A + "k_proj.weight"), P(A + "k_proj.bias"), P(A + "v_proj.weight"),
                       P(A + "v_proj.bias"), P(A + "out_proj.weight"), P(A + "out_proj.bias"),
                       P(L + "layer_norm2.weight"), P(L + "layer_norm2.bias"), P(L + "mlp.fc1.weight"),
                       P(L + "mlp.fc1.bias"), P(L + "mlp.fc2.weight"), P(L + "mlp.fc2.bias")});
  }
  resolved_generation_ = params_.generation();
}

void ClipTextModel::plan(int64_t B, int64_t T) {
  if (!arena_.empty() && B == planned_B_ && T == planned_T_) return;
  const int64_t n = B * T * config_.hidden, m = B * T * config_.intermediate;
  ArenaLayout layout;
  for (float** buf : {&x_, &h_, &q_, &k_, &v_, &o_}) layout.take(*buf, n);
  layout.take(mlp_, m);
  layout.take(act_, m);
  arena_.allocate(layout);
  planned_B_ = B;
  planned_T_ = T;
}

void ClipTextModel::forward(float* out, const int32_t* ids, const uint8_t* mask, int64_t B, int64_t T) {
  const ClipTextConfig& k = config_;
  if (T > k.max_positions)
    throw std::invalid_argument("text encoder: " + std::to_string(T) + " tokens exceed max_position_embeddings " +
                                std::to_string(k.max_positions));
  for (int64_t i = 0; i < B * T; ++i)
    if (ids[i] < 0 || ids[i] >= k.vocab_size)
      throw std::invalid_argument("text encoder: token id " + std::to_string(ids[i]) +
                                  " is outside the vocabulary of " + std::to_string(k.vocab_size));
  resolve();
  plan(B, T);
  const int64_t rows = B * T, C = k.hidden, d = C / k.heads;

  ops_.embedding_forward(x_, token_embedding_, ids, rows, C);
  for (int64_t b = 0; b < B; ++b) ops_.axpy(x_ + b * T * C, position_embedding_, 1.0f, T * C);
  for (const Layer& l : layers_) {
    ops_.layernorm_affine_forward(h_, x_, l.ln1_w, l.ln1_b, rows, C, k.eps);
    ops_.linear_forward(q_, h_, l.q_w, l.q_b, rows, C, C);
    ops_.linear_forward(k_, h_, l.k_w, l.k_b, rows, C, C);
    ops_.linear_forward(v_, h_, l.v_w, l.v_b, rows, C, C);
    ops_.attention_masked_forward(o_, q_, k_, v_, mask, true, B, T, T, k.heads, d,
                                  1.0f / std::sqrt(static_cast<float>(d)));
    ops_.linear_forward(h_, o_, l.out_w, l.out_b, rows, C, C);
    ops_.axpy(x_, h_, 1.0f, rows * C);
    ops_.layernorm_affine_forward(h_, x_, l.ln2_w, l.ln2_b, rows, C, k.eps);
    ops_.linear_forward(mlp_, h_, l.fc1_w, l.fc1_b, rows, C, k.intermediate);
    if (k.quick_gelu)
      ops_.quick_gelu_forward(act_, mlp_, rows * k.intermediate);
    else
      ops_.gelu_forward(act_, mlp_, rows * k.intermediate);
    ops_.linear_forward(h_, act_, l.fc2_w, l.fc2_b, rows, k.intermediate, C);
    ops_.axpy(x_, h_, 1.0f, rows * C);
  }
  ops_.layernorm_affine_forward(h_, x_, final_ln_w_, final_ln_b_, rows, C, k.eps);
  ops_.download(out, h_, rows * C);
}

}  // namespace lt
