// JS classes for the frozen encoders: `TextEncoder` (CLIPTextModel). Parameters are set by
// synchronous copies; encode runs on a worker thread and returns a Promise.
#include <memory>
#include <mutex>
#include <string>

#include "backends.h"
#include "model_binding.h"
#include "models/clip_text.h"
#include "models/effnet.h"
#include "napi_call.h"

namespace lt {
namespace {

class TextEncoderWrap : public Napi::ObjectWrap<TextEncoderWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "TextEncoder",
                       {InstanceMethod("parameters", &TextEncoderWrap::Parameters),
                        InstanceMethod("setParameter", &TextEncoderWrap::SetParameter),
                        InstanceMethod("encode", &TextEncoderWrap::Encode)});
  }

  // new TextEncoder(device, {vocab_size, hidden, layers, heads, intermediate, max_positions, eps, quick_gelu})
  explicit TextEncoderWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TextEncoderWrap>(info) {
    OpCall call(info, "TextEncoder");
    Ops& ops = backend_for(call, 0);
    Napi::Object o = call.object(1, "config");
    ClipTextConfig c;
    c.vocab_size = call.dim_of(o, "vocab_size");
    c.hidden = call.dim_of(o, "hidden");
    c.layers = call.dim_of(o, "layers");
    c.heads = call.dim_of(o, "heads");
    c.intermediate = call.dim_of(o, "intermediate");
    c.max_positions = call.dim_of(o, "max_positions");
    c.eps = static_cast<float>(call.number_of(o, "eps"));
    c.quick_gelu = call.flag_of(o, "quick_gelu");
    try {
      model_ = std::make_unique<ClipTextModel>(ops, c);
    } catch (const std::exception& e) {
      throw Napi::RangeError::New(info.Env(), e.what());
    }
  }

 private:
  Napi::Value Parameters(const Napi::CallbackInfo& info) { return parameters_of(info, *model_); }

  Napi::Value SetParameter(const Napi::CallbackInfo& info) { return set_parameter_of(info, *model_); }

  // (out Float32Array (B, T, hidden), ids Int32Array (B, T), mask Uint8Array (B, T), B, T) -> Promise
  Napi::Value Encode(const Napi::CallbackInfo& info) {
    OpCall call(info, "encode");
    int64_t B = call.dim(3, "B"), T = call.dim(4, "T");
    float* out = call.f32(0, "out", B * T * model_->config().hidden);
    const int32_t* ids = call.typed<int32_t, napi_int32_array>(1, "ids", B * T, "Int32Array");
    const uint8_t* mask = call.typed<uint8_t, napi_uint8_array>(2, "mask", B * T, "Uint8Array");
    call.pin(Value());
    ClipTextModel* m = model_.get();
    return call.run([=] {
      std::lock_guard<std::mutex> lock(m->mutex());
      m->forward(out, ids, mask, B, T);
    });
  }

  std::unique_ptr<ClipTextModel> model_;
};

class ImageEncoderWrap : public Napi::ObjectWrap<ImageEncoderWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "ImageEncoder",
                       {InstanceMethod("parameters", &ImageEncoderWrap::Parameters),
                        InstanceMethod("setParameter", &ImageEncoderWrap::SetParameter),
                        InstanceMethod("encode", &ImageEncoderWrap::Encode)});
  }

  // new ImageEncoder(device, {stages: [{fused, expand, kernel, stride, in, out, layers}], last_channel,
  // latent_channels})
  explicit ImageEncoderWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ImageEncoderWrap>(info) {
    OpCall call(info, "ImageEncoder");
    Ops& ops = backend_for(call, 0);
    Napi::Object o = call.object(1, "config");
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
    try {
      model_ = std::make_unique<EffNetEncoder>(ops, c);
    } catch (const std::exception& e) {
      throw Napi::RangeError::New(info.Env(), e.what());
    }
  }

 private:
  Napi::Value Parameters(const Napi::CallbackInfo& info) { return parameters_of(info, *model_); }

  Napi::Value SetParameter(const Napi::CallbackInfo& info) { return set_parameter_of(info, *model_); }

  // (out Float32Array (B, latent, H/32, W/32), images Float32Array (B, 3, H, W), B, H, W) -> Promise
  Napi::Value Encode(const Napi::CallbackInfo& info) {
    OpCall call(info, "encode");
    int64_t B = call.dim(2, "B"), H = call.dim(3, "H"), W = call.dim(4, "W");
    if (H % 32 || W % 32) call.fail_range("a multiple of 32", H % 32 ? "H" : "W", info[H % 32 ? 3 : 4]);
    float* out = call.f32(0, "out", B * model_->config().latent_channels * (H / 32) * (W / 32));
    const float* images = call.f32(1, "images", B * 3 * H * W);
    call.pin(Value());
    EffNetEncoder* m = model_.get();
    return call.run([=] {
      std::lock_guard<std::mutex> lock(m->mutex());
      m->forward(out, images, B, H, W);
    });
  }

  std::unique_ptr<EffNetEncoder> model_;
};

}  // namespace

void register_encoders(Napi::Env env, Napi::Object exports) {
  exports.Set("TextEncoder", TextEncoderWrap::Define(env));
  exports.Set("ImageEncoder", ImageEncoderWrap::Define(env));
}

}  // namespace lt
