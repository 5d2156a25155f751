// JS classes for the picture models: `Decoder` (Würstchen's Stage B, diffusers'
// WuerstchenDiffNeXt) and `VQGANDecoder` (diffusers' PaellaVQModel.decode). forward and decode
// run on a worker thread and return a Promise.
#include <string>
#include <vector>

#include "model_binding.h"
#include "models/diffnext.h"
#include "models/paella_vq.h"

namespace lt {
namespace {

class DecoderWrap : public ModelWrap<DecoderWrap, DiffNeXt> {
 public:
  static constexpr const char* kName = "Decoder";
  using Config = DiffNeXtConfig;

  static Napi::Function Define(Napi::Env env) { return define(env, {{"forward", &DecoderWrap::Forward}}); }

  // {c_in, c_out, c_r, patch_size, c_cond, effnet_embd, clip_embd, kernel_size, c_hidden: [],
  //  nhead: [] (levels without attention: any positive value), blocks: [], level_config: [""],
  //  inject_effnet: [bool], weight_type?: 'f32' | 'bf16' | 'f16'}
  static DiffNeXtConfig read_config(OpCall& call, Napi::Object o) {
    DiffNeXtConfig c;
    c.c_in = call.dim_of(o, "c_in");
    c.c_out = call.dim_of(o, "c_out");
    c.c_r = call.dim_of(o, "c_r");
    c.patch_size = call.dim_of(o, "patch_size");
    c.c_cond = call.dim_of(o, "c_cond");
    c.effnet_embd = call.dim_of(o, "effnet_embd");
    c.clip_embd = call.dim_of(o, "clip_embd");
    c.kernel_size = call.dim_of(o, "kernel_size");
    auto list = [&](const char* key) {
      Napi::Value v = o.Get(key);
      if (!v.IsArray()) call.fail_type("an Array", key, v);
      return v.As<Napi::Array>();
    };
    Napi::Array hidden = list("c_hidden"), heads = list("nhead"), blocks = list("blocks"), types = list("level_config"),
                inject = list("inject_effnet");
    for (uint32_t i = 0; i < hidden.Length(); ++i) {
      const std::string at = std::to_string(i);
      c.c_hidden.push_back(call.dim_of(hidden, at.c_str()));
      c.nhead.push_back(call.dim_of(heads, at.c_str()));
      c.blocks.push_back(call.dim_of(blocks, at.c_str()));
      Napi::Value type = types.Get(i);
      if (!type.IsString()) call.fail_type("a string", "level_config[" + at + "]", type);
      c.level_config.push_back(type.As<Napi::String>().Utf8Value());
      c.inject_effnet.push_back(call.flag_of(inject, at));
    }
    Napi::Value wt = o.Get("weight_type");
    if (!wt.IsUndefined() && (!wt.IsString() || !parse_dtype(wt.As<Napi::String>().Utf8Value(), &c.weight_type)))
      call.fail_type("'f32', 'bf16' or 'f16'", "weight_type", wt);
    return c;
  }

  explicit DecoderWrap(const Napi::CallbackInfo& info) : ModelWrap(info) {}

 private:
  // (out (B, c_out, H, W), x (B, c_in, H, W), r (B), effnet (B, effnet_embd, He, We), clip
  //  (B, T, clip_embd): Float32Arrays, then B, H, W, He, We, T) -> Promise
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    OpCall call(info, "forward");
    const int64_t B = call.dim(5, "B"), H = call.dim(6, "H"), W = call.dim(7, "W"), He = call.dim(8, "He"),
                  We = call.dim(9, "We"), T = call.dim(10, "T");
    const DiffNeXtConfig& k = model_->config();
    float* out = call.f32(0, "out", B * k.c_out * H * W);
    const float* x = call.f32(1, "x", B * k.c_in * H * W);
    const float* r = call.f32(2, "r", B);
    const float* effnet = call.f32(3, "effnet", B * k.effnet_embd * He * We);
    const float* clip = call.f32(4, "clip", B * T * k.clip_embd);
    return run_locked(call, [=](DiffNeXt& m) { m.forward(out, x, r, effnet, clip, B, H, W, He, We, T); });
  }
};

class VQGANDecoderWrap : public ModelWrap<VQGANDecoderWrap, PaellaVQDecoder> {
 public:
  static constexpr const char* kName = "VQGANDecoder";
  using Config = PaellaVQConfig;

  static Napi::Function Define(Napi::Env env) { return define(env, {{"decode", &VQGANDecoderWrap::Decode}}); }

  // {latent_channels, out_channels, levels, bottleneck_blocks, embed_dim, up_down_scale_factor}
  static PaellaVQConfig read_config(OpCall& call, Napi::Object o) {
    PaellaVQConfig c;
    c.latent_channels = call.dim_of(o, "latent_channels");
    c.out_channels = call.dim_of(o, "out_channels");
    c.levels = call.dim_of(o, "levels");
    c.bottleneck_blocks = call.dim_of(o, "bottleneck_blocks");
    c.embed_dim = call.dim_of(o, "embed_dim");
    c.up_down_scale_factor = call.dim_of(o, "up_down_scale_factor");
    return c;
  }

  explicit VQGANDecoderWrap(const Napi::CallbackInfo& info) : ModelWrap(info) {}

 private:
  // (out Float32Array (B, out_channels, Ho, Wo), latents Float32Array (B, latent_channels, H, W), B, H, W)
  // -> Promise
  Napi::Value Decode(const Napi::CallbackInfo& info) {
    OpCall call(info, "decode");
    int64_t B = call.dim(2, "B"), H = call.dim(3, "H"), W = call.dim(4, "W");
    const PaellaVQConfig& k = model_->config();
    float* out = call.f32(0, "out", B * k.out_channels * model_->output_size(H) * model_->output_size(W));
    const float* latents = call.f32(1, "latents", B * k.latent_channels * H * W);
    return run_locked(call, [=](PaellaVQDecoder& m) { m.decode(out, latents, B, H, W); });
  }
};

}  // namespace

void register_decoders(Napi::Env env, Napi::Object exports) {
  exports.Set("Decoder", DecoderWrap::Define(env));
  exports.Set("VQGANDecoder", VQGANDecoderWrap::Define(env));
}

}  // namespace lt
