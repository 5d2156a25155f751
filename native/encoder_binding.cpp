// JS classes for the frozen encoders: `TextEncoder` (transformers' CLIPTextModel) and
// `ImageEncoder` (Würstchen's EfficientNetV2 encoder). encode runs on a worker thread and
// returns a Promise.
#include <string>

#include "model_binding.h"
#include "models/clip_text.h"
#include "models/effnet.h"

namespace lt {
namespace {

class TextEncoderWrap : public ModelWrap<TextEncoderWrap, ClipTextModel> {
 public:
  static constexpr const char* kName = "TextEncoder";
  using Config = ClipTextConfig;

  static Napi::Function Define(Napi::Env env) { return define(env, {{"encode", &TextEncoderWrap::Encode}}); }

  // {vocab_size, hidden, layers, heads, intermediate, max_positions, eps, quick_gelu}
  static ClipTextConfig read_config(OpCall& call, Napi::Object o) {
    ClipTextConfig c;
    c.vocab_size = call.dim_of(o, "vocab_size");
    c.hidden = call.dim_of(o, "hidden");
    c.layers = call.dim_of(o, "layers");
    c.heads = call.dim_of(o, "heads");
    c.intermediate = call.dim_of(o, "intermediate");
    c.max_positions = call.dim_of(o, "max_positions");
    c.eps = static_cast<float>(call.number_of(o, "eps"));
    c.quick_gelu = call.flag_of(o, "quick_gelu");
    return c;
  }

  explicit TextEncoderWrap(const Napi::CallbackInfo& info) : ModelWrap(info) {}

 private:
  // (out Float32Array (B, T, hidden), ids Int32Array (B, T), mask Uint8Array (B, T), B, T) -> Promise
  Napi::Value Encode(const Napi::CallbackInfo& info) {
    OpCall call(info, "encode");
    int64_t B = call.dim(3, "B"), T = call.dim(4, "T");
    float* out = call.f32(0, "out", B * T * model_->config().hidden);
    const int32_t* ids = call.typed<int32_t, napi_int32_array>(1, "ids", B * T, "Int32Array");
    const uint8_t* mask = call.typed<uint8_t, napi_uint8_array>(2, "mask", B * T, "Uint8Array");
    return run_locked(call, [=](ClipTextModel& m) { m.forward(out, ids, mask, B, T); });
  }
};

class ImageEncoderWrap : public ModelWrap<ImageEncoderWrap, EffNetEncoder> {
 public:
  static constexpr const char* kName = "ImageEncoder";
  using Config = EffNetConfig;

  static Napi::Function Define(Napi::Env env) { return define(env, {{"encode", &ImageEncoderWrap::Encode}}); }

  // {stages: [{fused, expand, kernel, stride, in, out, layers}], last_channel, latent_channels}
  static EffNetConfig read_config(OpCall& call, Napi::Object o) {
    EffNetConfig c;
    c.last_channel = call.dim_of(o, "last_channel");
    c.latent_channels = call.dim_of(o, "latent_channels");
    Napi::Value stages = o.Get("stages");
    if (!stages.IsArray()) call.fail_type("an Array", "stages", stages);
    Napi::Array list = stages.As<Napi::Array>();
    for (uint32_t i = 0; i < list.Length(); ++i) {
      Napi::Value v = list.Get(i);
      if (!v.IsObject()) call.fail_type("an object", "stages[" + std::to_string(i) + "]", v);
      Napi::Object st = v.As<Napi::Object>();
      c.stages.push_back({call.flag_of(st, "fused"), call.dim_of(st, "expand"), call.dim_of(st, "kernel"),
                          call.dim_of(st, "stride"), call.dim_of(st, "in"), call.dim_of(st, "out"),
                          call.dim_of(st, "layers")});
    }
    return c;
  }

  explicit ImageEncoderWrap(const Napi::CallbackInfo& info) : ModelWrap(info) {}

 private:
  // (out Float32Array (B, latent, H/32, W/32), images Float32Array (B, 3, H, W), B, H, W) -> Promise
  Napi::Value Encode(const Napi::CallbackInfo& info) {
    OpCall call(info, "encode");
    int64_t B = call.dim(2, "B"), H = call.dim(3, "H"), W = call.dim(4, "W");
    if (H % 32 || W % 32) call.fail_range("a multiple of 32", H % 32 ? "H" : "W", info[H % 32 ? 3 : 4]);
    float* out = call.f32(0, "out", B * model_->config().latent_channels * (H / 32) * (W / 32));
    const float* images = call.f32(1, "images", B * 3 * H * W);
    return run_locked(call, [=](EffNetEncoder& m) { m.forward(out, images, B, H, W); });
  }
};

}  // namespace

void register_encoders(Napi::Env env, Napi::Object exports) {
  exports.Set("TextEncoder", TextEncoderWrap::Define(env));
  exports.Set("ImageEncoder", ImageEncoderWrap::Define(env));
}

}  // namespace lt
