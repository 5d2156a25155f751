// The Würstchen v2 prior (diffusers' WuerstchenPrior, docs/wuerstchen-prior.md §2-3) composed
// from the ops in ops.h, with LoRA adapters on chosen Linear layers. Activations live in one arena
// planned per batch shape, so a training step is one call: forward, MSE loss, backward into
// the LoRA gradients. Internally the residual stream is channels last, (B, H*W, c), tokens in
// h-major order as diffusers' attention sees them.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>
#include "../parallel/collective.h"
#include "../parallel/gradient_buckets.h"

#include "../ops.h"
#include "arena.h"
#include "param_store.h"

namespace lt {

// No defaults here: every field comes from the model's config.json, which JS reads with
// diffusers' defaults for the keys it leaves out. Zero is refused by the constructor.
struct PriorConfig {
  int64_t c_in = 0, c = 0, c_cond = 0, c_r = 0, depth = 0, nhead = 0;
  float dropout = 0.0f;
  // Storage of the frozen Linear weights. bf16/f16 is mixed precision: those GEMMs read their
  // activations rounded to the same type and accumulate in fp32; everything else (activations,
  // norms, LoRA weights, gradients, AdamW state) stays fp32.
  DType weight_type = DType::f32;
};

// As the config's prior_lora_config, whose defaults JS applies.
struct LoraConfig {
  int64_t rank = 0;
  float alpha = 0.0f;
  // Module-name suffixes as peft matches them: "to_q" adapts every blocks.N.attention.to_q.
  std::vector<std::string> targets;
  float dropout = 0.0f;
};

struct StepShape {
  int64_t B, H, W, T;  // batch, latent height and width, text tokens
  bool operator==(const StepShape& o) const { return B == o.B && H == o.H && W == o.W && T == o.T; }
};

class Prior {
 public:
  Prior(Ops& ops, const PriorConfig& config);
  ~Prior();
  Prior(const Prior&) = delete;
  Prior& operator=(const Prior&) = delete;

  const PriorConfig& config() const { return config_; }
  // Frozen parameters, named and shaped as in diffusers' state dict.
  std::vector<NamedShape> parameters() const;
  void set_parameter(const std::string& name, const float* host, int64_t n);
  ParamStore::NonFinite load_parameter(const std::string& name, const std::shared_ptr<WeightFile>& file, int64_t offset,
                                       DType type) {
    return params_.load(name, file, offset, type);
  }

  // Adds LoRA adapters (A and B zero until set) to every Linear whose module name ends in a
  // target; throws when a target matches nothing. Replaces adapters added before.
  void enable_lora(const LoraConfig& lora);
  bool has_lora() const { return !lora_layers_.empty(); }
  const LoraConfig& lora_config() const { return lora_config_; }
  // "<module>.lora_A.weight" (r, in) and "<module>.lora_B.weight" (out, r), in layer order.
  std::vector<NamedShape> lora_parameters() const;
  void set_lora(const std::string& name, const float* host, int64_t n);
  void get_lora(const std::string& name, float* host, int64_t n) const;
  void get_lora_grad(const std::string& name, float* host, int64_t n) const;

  // out (B, c_in, H, W) = prior(x (B, c_in, H, W), r (B), clip (B, T, c_cond)); host pointers.
  // Dropout (and LoRA dropout) only when train, drawn from seed.
  void forward(float* out, const float* x, const float* r, const float* clip, const StepShape& s, bool train,
               uint64_t seed);
  // Forward in training mode, MSE against target (B, c_in, H, W), backward into the LoRA
  // gradients (zeroed first unless accumulate). Returns the loss.
  // loss_scale multiplies the loss's gradient (fp16 dynamic loss scaling); the returned loss
  // is unscaled.
  // With sync, the step ends an accumulation round of data-parallel training: the gradient
  // block is summed over sync's processes, in buckets of bucket_bytes started while the
  // backward still runs (through host memory, after the backward, when the collective's
  // buffers and this backend's differ).
  double loss_and_grad(const float* x, const float* r, const float* clip, const float* target, const StepShape& s,
                       uint64_t seed, bool accumulate, bool train = true, float loss_scale = 1.0f,
                       Collective* sync = nullptr, int64_t bucket_bytes = 0);
  // One AdamW step on every LoRA tensor with the gradients read as grad * inv_loss_scale and
  // clipped to a global norm of max_norm (<= 0: no clipping). Returns the unscaled gradient
  // norm before clipping; when it is not finite (an fp16 overflow) nothing is updated.
  double optimizer_step(float lr, float beta1, float beta2, float eps, float weight_decay, double max_norm,
                        int64_t step, float inv_loss_scale = 1.0f);
  // Every LoRA gradient, in one block of grad_block_size() floats (device memory on GPU
  // backends; padding between tensors stays zero): what data parallelism sums across processes.
  float* grad_block() { return lora_grads_; }
  int64_t grad_block_size() const { return lora_grads_n_; }
  // The gradient block summed over the collective's processes, in place (through host memory
  // when the collective's buffers and this backend's differ).
  void allreduce_grads(Collective& collective);
  // Floats of each bucket loss_and_grad sums with bucket_bytes, in the order they start.
  std::vector<int64_t> gradient_buckets(int64_t bucket_bytes) {
    if (!lora_grads_) throw std::logic_error("gradientBuckets needs LoRA adapters: call enable_lora first");
    plan_buckets(bucket_bytes);
    return buckets_.sizes();
  }
  // AdamW moments by LoRA parameter name, for checkpoints: "<name>.exp_avg" / ".exp_avg_sq".
  void get_optimizer_state(const std::string& name, float* host, int64_t n) const;
  void set_optimizer_state(const std::string& name, const float* host, int64_t n);
  // Bytes of the activation arena planned for the last step shape (0 before any step).
  int64_t activation_bytes() const { return arena_.bytes(); }
  // Bytes of the frozen parameters as stored.
  int64_t parameter_bytes() const { return params_.bytes(); }

  // Serialises calls from JS worker threads: one model, one computation at a time.
  std::mutex& mutex() { return mutex_; }

 private:
  struct Linear;
  struct Block;
  struct Saved;
  struct Acts;
  struct ArenaPlan;
  struct LoraTensors;

  // Adds a Linear's weight (out, in) or wshape and bias (out) to the parameters.
  Linear* add_linear(const std::string& module, int64_t in, int64_t out, std::vector<int64_t> wshape = {},
                     bool adaptable = true);
  // Points the layers at their parameters, unless they already point where params_ has them.
  void resolve_parameters();
  // Lays the activations of one batch shape out in one arena (again only when the shape, or
  // forward-only to training, changes).
  void plan(const StepShape& s, bool train);
  void plan_block(ArenaPlan& p, const StepShape& s, int64_t d);
  void plan_backward(ArenaPlan& p, const StepShape& s);
  void run_forward(const StepShape& s, bool train, uint64_t seed);
  struct Backward;
  void run_backward(const StepShape& s, bool train, uint64_t seed);
  // Block d's stages, each taking the stream's gradient from its output to its input.
  void attention_block_backward(Backward& g, int64_t d);
  void timestep_block_backward(Backward& g, int64_t d);
  void res_block_backward(Backward& g, int64_t d);
  // Where the first adapter sits in the forward: 3 d + 0 (ResBlock), 1 (TimestepBlock) or 2
  // (AttnBlock) of block d; 3 depth when no block has one.
  int64_t lowest_adapter_stage() const;
  // A kept activation (Saved) as the tensor later ops read, and as the output its op writes
  // (low precision in a mixed-precision training plan, else fp32).
  TensorRef saved(const Saved& v) const;
  TensorOut output(const Saved& v) const;
  void linear_forward(Linear& l, TensorOut y, TensorRef x, float* xa, float* x_drop, int64_t rows, bool train,
                      uint64_t seed);
  // accumulate false: dx receives the first contribution (overwritten, not zeroed first).
  void linear_backward(Linear& l, float* dx, const float* dy, TensorRef x, const float* xa, const float* x_drop,
                       float* dx_scratch, int64_t rows, bool train, uint64_t seed, bool accumulate);
  // linear_backward without marking the adapter's gradient final: one block of a layer's rows.
  void linear_backward_rows(Linear& l, float* dx, const float* dy, TensorRef x, const float* xa, const float* x_drop,
                            float* dx_scratch, int64_t rows, bool train, uint64_t seed, bool accumulate);
  // to_k or to_v at batch 1 over [latents; text] keys when only the latents' rows need an input
  // gradient (no adapter on kv_mapper, no LoRA dropout): the two blocks of rows in two calls,
  // the text's without dx.
  void key_value_backward(Linear& l, float* d_src, const float* dy, TensorRef src, const float* xa, const StepShape& s,
                          bool accumulate);
  // Gradient buckets of bucket_bytes over the LoRA layers (again only when the size changes).
  void plan_buckets(int64_t bucket_bytes);
  const LoraTensors& lora_tensors(const std::string& name, const char** which) const;
  void release_lora();
  // The AdamW moment buffer "<lora param>.exp_avg" or ".exp_avg_sq", checked to hold n values.
  float* optimizer_buffer(const std::string& name, int64_t n) const;

  Ops& ops_;
  PriorConfig config_;
  ParamStore params_;                             // frozen weights
  std::vector<std::unique_ptr<Linear>> linears_;  // every Linear, in state-dict order
  uint64_t resolved_generation_ = ~uint64_t{0};   // of params_ when the pointers below were taken
  // The layers as the forward walks them.
  Linear *projection_, *cond_mapper_0_, *cond_mapper_2_, *out_;
  std::vector<Block> blocks_;  // (depth): one ResBlock, TimestepBlock and AttnBlock each
  std::vector<Linear*> lora_layers_;
  LoraConfig lora_config_;
  float lora_scale() const { return lora_config_.alpha / static_cast<float>(lora_config_.rank); }
  int64_t lowest_adapter_stage_ = 0;  // of the adapters enabled, set by enable_lora
  float* lora_grads_ = nullptr;       // (lora_grads_n_): every dA and dB, see grad_block()
  int64_t lora_grads_n_ = 0;
  GradientBuckets buckets_;  // of lora_grads_, summed during a synchronising backward
  std::unique_ptr<Acts> acts_;
  Arena arena_;
  StepShape planned_{0, 0, 0, 0};
  bool planned_train_ = false;
  std::mutex mutex_;
};

}  // namespace lt
