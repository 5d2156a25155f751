// JS class `Prior` (the native side of src/models/prior.ts): owns one lt::Prior. LoRA and
// optimizer-state transfers are synchronous copies; forward, lossAndGrad and optimizerStep run on
// a worker thread and return Promises.
#include <string>

#include "model_binding.h"
#include "models/prior.h"
#include "parallel/collective_binding.h"

namespace lt {
namespace {

class PriorWrap : public ModelWrap<PriorWrap, Prior> {
 public:
  static constexpr const char* kName = "Prior";
  using Config = PriorConfig;

  static Napi::Function Define(Napi::Env env) {
    return define(env, {{"enableLora", &PriorWrap::EnableLora},
                        {"loraParameters", &PriorWrap::LoraParameters},
                        {"setLora", &PriorWrap::SetLora},
                        {"getLora", &PriorWrap::GetLora},
                        {"getLoraGrad", &PriorWrap::GetLoraGrad},
                        {"getOptimizerState", &PriorWrap::GetOptimizerState},
                        {"setOptimizerState", &PriorWrap::SetOptimizerState},
                        {"forward", &PriorWrap::Forward},
                        {"lossAndGrad", &PriorWrap::LossAndGrad},
                        {"optimizerStep", &PriorWrap::OptimizerStep},
                        {"allreduceGrads", &PriorWrap::AllreduceGrads},
                        {"gradientBuckets", &PriorWrap::GradientBuckets},
                        {"activationBytes", &PriorWrap::ActivationBytes},
                        {"parameterBytes", &PriorWrap::ParameterBytes}});
  }

  // {c_in, c, c_cond, c_r, depth, nhead, dropout, weight_type?: 'f32' | 'bf16' | 'f16'}
  static PriorConfig read_config(OpCall& call, Napi::Object cfg) {
    PriorConfig c;
    c.c_in = call.dim_of(cfg, "c_in");
    c.c = call.dim_of(cfg, "c");
    c.c_cond = call.dim_of(cfg, "c_cond");
    c.c_r = call.dim_of(cfg, "c_r");
    c.depth = call.dim_of(cfg, "depth");
    c.nhead = call.dim_of(cfg, "nhead");
    c.dropout = static_cast<float>(call.number_of(cfg, "dropout"));
    Napi::Value wt = cfg.Get("weight_type");
    if (!wt.IsUndefined() && (!wt.IsString() || !parse_dtype(wt.As<Napi::String>().Utf8Value(), &c.weight_type)))
      call.fail_type("'f32', 'bf16' or 'f16'", "weight_type", wt);
    return c;
  }

  explicit PriorWrap(const Napi::CallbackInfo& info) : ModelWrap(info) {}

 private:
  // ({rank, alpha, targets: string[], dropout})
  Napi::Value EnableLora(const Napi::CallbackInfo& info) {
    OpCall call(info, "enableLora");
    Napi::Object o = call.object(0, "lora");
    LoraConfig lora;
    lora.rank = call.dim_of(o, "rank");
    lora.alpha = static_cast<float>(call.number_of(o, "alpha"));
    lora.dropout = static_cast<float>(call.number_of(o, "dropout"));
    Napi::Value targets = o.Get("targets");
    if (!targets.IsArray()) call.fail_type("an Array of strings", "lora.targets", targets);
    Napi::Array t = targets.As<Napi::Array>();
    for (uint32_t i = 0; i < t.Length(); ++i) {
      Napi::Value s = t.Get(i);
      if (!s.IsString()) call.fail_type("a string", "lora.targets[" + std::to_string(i) + "]", s);
      lora.targets.push_back(s.As<Napi::String>().Utf8Value());
    }
    return locked(info, [&] {
      model_->enable_lora(lora);
      return info.Env().Undefined();
    });
  }

  Napi::Value LoraParameters(const Napi::CallbackInfo& info) {
    return locked(info, [&] { return named_shapes(info.Env(), model_->lora_parameters()).As<Napi::Value>(); });
  }

  Napi::Value SetLora(const Napi::CallbackInfo& info) {
    return transfer(info, "setLora", [&](const std::string& n, float* p, int64_t len) { model_->set_lora(n, p, len); });
  }
  Napi::Value GetLora(const Napi::CallbackInfo& info) {
    return transfer(info, "getLora", [&](const std::string& n, float* p, int64_t len) { model_->get_lora(n, p, len); });
  }
  Napi::Value GetLoraGrad(const Napi::CallbackInfo& info) {
    return transfer(info, "getLoraGrad",
                    [&](const std::string& n, float* p, int64_t len) { model_->get_lora_grad(n, p, len); });
  }
  Napi::Value GetOptimizerState(const Napi::CallbackInfo& info) {
    return transfer(info, "getOptimizerState",
                    [&](const std::string& n, float* p, int64_t len) { model_->get_optimizer_state(n, p, len); });
  }
  Napi::Value SetOptimizerState(const Napi::CallbackInfo& info) {
    return transfer(info, "setOptimizerState",
                    [&](const std::string& n, float* p, int64_t len) { model_->set_optimizer_state(n, p, len); });
  }

  StepShape step_shape(OpCall& call, size_t i) {
    return {call.dim(i, "B"), call.dim(i + 1, "H"), call.dim(i + 2, "W"), call.dim(i + 3, "T")};
  }

  // (out, x, r, clip, B, H, W, T, train, seed) -> Promise<void>
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    OpCall call(info, "forward");
    StepShape s = step_shape(call, 4);
    bool train = call.flag(8, "train");
    uint64_t seed = call.seed(9, "seed");
    const PriorConfig& k = model_->config();
    const int64_t n = s.B * k.c_in * s.H * s.W;
    float* out = call.f32(0, "out", n);                             // (B, c_in, H, W)
    const float* x = call.f32(1, "x", n);                           // (B, c_in, H, W)
    const float* r = call.f32(2, "r", s.B);                         // (B)
    const float* clip = call.f32(3, "clip", s.B * s.T * k.c_cond);  // (B, T, c_cond)
    return run_locked(call, [=](Prior& m) { m.forward(out, x, r, clip, s, train, seed); });
  }

  // (x, r, clip, target, B, H, W, T, seed, accumulate, train, lossScale[, collective,
  // bucketBytes]) -> Promise<loss>; with a collective, the gradients end summed over its
  // processes (see Prior::loss_and_grad).
  Napi::Value LossAndGrad(const Napi::CallbackInfo& info) {
    OpCall call(info, "lossAndGrad");
    StepShape s = step_shape(call, 4);
    uint64_t seed = call.seed(8, "seed");
    bool accumulate = call.flag(9, "accumulate"), train = call.flag(10, "train");
    float loss_scale = static_cast<float>(call.number(11, "lossScale"));
    const PriorConfig& k = model_->config();
    const int64_t n = s.B * k.c_in * s.H * s.W;
    const float* x = call.f32(0, "x", n);                           // (B, c_in, H, W)
    const float* r = call.f32(1, "r", s.B);                         // (B)
    const float* clip = call.f32(2, "clip", s.B * s.T * k.c_cond);  // (B, T, c_cond)
    const float* target = call.f32(3, "target", n);                 // (B, c_in, H, W)
    std::shared_ptr<SharedCollective> sync;
    int64_t bucket_bytes = 0;
    if (info.Length() > 12 && !info[12].IsUndefined()) {
      sync = collective_arg(call, 12);
      bucket_bytes = call.dim(13, "bucketBytes");
    }
    return run_locked(call, [=](Prior& m) {
      if (!sync) return m.loss_and_grad(x, r, clip, target, s, seed, accumulate, train, loss_scale);
      std::lock_guard<std::mutex> lock(sync->mutex);
      return m.loss_and_grad(x, r, clip, target, s, seed, accumulate, train, loss_scale, sync->collective.get(),
                             bucket_bytes);
    });
  }

  // (lr, beta1, beta2, eps, weightDecay, maxNorm, step, invLossScale) -> Promise<grad norm>
  Napi::Value OptimizerStep(const Napi::CallbackInfo& info) {
    OpCall call(info, "optimizerStep");
    float lr = static_cast<float>(call.number(0, "lr")), b1 = static_cast<float>(call.number(1, "beta1")),
          b2 = static_cast<float>(call.number(2, "beta2")), eps = static_cast<float>(call.number(3, "eps")),
          wd = static_cast<float>(call.number(4, "weightDecay"));
    double max_norm = call.number(5, "maxNorm");
    int64_t step = call.dim(6, "step");
    float inv_loss_scale = static_cast<float>(call.number(7, "invLossScale"));
    return run_locked(call,
                      [=](Prior& m) { return m.optimizer_step(lr, b1, b2, eps, wd, max_norm, step, inv_loss_scale); });
  }

  // (collective) -> Promise: every LoRA gradient summed over the collective's processes, in
  // place; optimizerStep's invLossScale then divides by their number.
  Napi::Value AllreduceGrads(const Napi::CallbackInfo& info) {
    OpCall call(info, "allreduceGrads");
    auto shared = collective_arg(call, 0);
    return run_locked(call, [shared](Prior& m) {
      std::lock_guard<std::mutex> lock(shared->mutex);
      m.allreduce_grads(*shared->collective);
    });
  }

  // (bucketBytes) -> number[]: floats of each gradient bucket, in the order they are summed.
  Napi::Value GradientBuckets(const Napi::CallbackInfo& info) {
    return locked(info, [&] {
      OpCall call(info, "gradientBuckets");
      const int64_t bucket_bytes = call.dim(0, "bucketBytes");
      const std::vector<int64_t> sizes = model_->gradient_buckets(bucket_bytes);
      Napi::Array out = Napi::Array::New(info.Env(), sizes.size());
      for (size_t i = 0; i < sizes.size(); ++i)
        out.Set(static_cast<uint32_t>(i), Napi::Number::New(info.Env(), static_cast<double>(sizes[i])));
      return out.As<Napi::Value>();
    });
  }

  Napi::Value ActivationBytes(const Napi::CallbackInfo& info) {
    return locked(info, [&] {
      return Napi::Number::New(info.Env(), static_cast<double>(model_->activation_bytes())).As<Napi::Value>();
    });
  }

  Napi::Value ParameterBytes(const Napi::CallbackInfo& info) {
    return locked(info, [&] {
      return Napi::Number::New(info.Env(), static_cast<double>(model_->parameter_bytes())).As<Napi::Value>();
    });
  }
};

}  // namespace

void register_prior(Napi::Env env, Napi::Object exports) { exports.Set("Prior", PriorWrap::Define(env)); }

}  // namespace lt
