// The JS classes of the native models (Prior, TextEncoder, ImageEncoder) share one skeleton:
// `new Name(device, config)` makes the model on that backend; `parameters()` and
// `setParameter(name, Float32Array)` fill its weights synchronously; each class adds its own
// methods, which run on a worker thread and return Promises. The model's mutex serialises every
// call, as one model does one computation at a time.
#pragma once
#include <napi.h>

#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "backends.h"
#include "models/param_store.h"
#include "napi_call.h"

namespace lt {

// [{name, shape}] for a list of named shapes.
inline Napi::Array named_shapes(Napi::Env env, const std::vector<NamedShape>& list) {
  Napi::Array out = Napi::Array::New(env, list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", list[i].name);
    Napi::Array shape = Napi::Array::New(env, list[i].shape.size());
    for (size_t j = 0; j < list[i].shape.size(); ++j) shape.Set(j, static_cast<double>(list[i].shape[j]));
    o.Set("shape", shape);
    out.Set(i, o);
  }
  return out;
}

// Derived (CRTP) provides `static constexpr const char* kName`, `using Config = ...` and
// `static Config read_config(OpCall&, Napi::Object)`; Model is constructed from (Ops&, Config)
// and has parameters(), set_parameter(name, data, n) and mutex().
template <typename Derived, typename Model>
class ModelWrap : public Napi::ObjectWrap<Derived> {
 public:
  using Method = typename Napi::ObjectWrap<Derived>::InstanceMethodCallback;

  // The class with parameters and setParameter, then the model's own methods.
  static Napi::Function define(Napi::Env env, std::vector<std::pair<const char*, Method>> methods) {
    std::vector<Napi::ClassPropertyDescriptor<Derived>> properties = {
        Napi::ObjectWrap<Derived>::InstanceMethod("parameters", &ModelWrap::Parameters),
        Napi::ObjectWrap<Derived>::InstanceMethod("setParameter", &ModelWrap::SetParameter),
        Napi::ObjectWrap<Derived>::InstanceMethod("loadParameters", &ModelWrap::LoadParameters)};
    for (auto& [name, method] : methods) properties.push_back(Napi::ObjectWrap<Derived>::InstanceMethod(name, method));
    return Napi::ObjectWrap<Derived>::DefineClass(env, Derived::kName, properties);
  }

 protected:
  explicit ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Derived>(info) {
    OpCall call(info, Derived::kName);
    Ops& ops = backend_for(call, 0);
    typename Derived::Config config = Derived::read_config(call, call.object(1, "config"));
    try {
      model_ = std::make_unique<Model>(ops, config);
    } catch (const std::exception& e) {
      throw Napi::RangeError::New(info.Env(), e.what());
    }
  }

  // f() under the model's lock, on the JS thread; a C++ exception becomes a JS Error.
  template <typename F>
  Napi::Value locked(const Napi::CallbackInfo& info, F f) {
    std::lock_guard<std::mutex> lock(model_->mutex());
    try {
      return f();
    } catch (const Napi::Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
  }

  // Runs work(model) on a worker thread under the model's lock; the JS object stays alive until
  // it finishes. Returns the Promise of work's number, or of undefined.
  template <typename F>
  Napi::Value run_locked(OpCall& call, F work) {
    call.pin(this->Value());
    Model* m = model_.get();
    if constexpr (std::is_void_v<decltype(work(*m))>)
      return call.run([=] {
        std::lock_guard<std::mutex> lock(m->mutex());
        work(*m);
      });
    else
      return call.run_number([=] {
        std::lock_guard<std::mutex> lock(m->mutex());
        return static_cast<double>(work(*m));
      });
  }

  // (name, Float32Array): f(name, data, length) under the lock, a copy between JS and one named
  // tensor of the model.
  template <typename F>
  Napi::Value transfer(const Napi::CallbackInfo& info, const char* op, F f) {
    OpCall call(info, op);
    std::string name = call.string(0, "name");
    Napi::Value v = info[1];
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      call.fail_type("a Float32Array", "data", v);
    auto arr = v.As<Napi::Float32Array>();
    return locked(info, [&] {
      f(name, arr.Data(), static_cast<int64_t>(arr.ElementLength()));
      return info.Env().Undefined();
    });
  }

  std::unique_ptr<Model> model_;

 private:
  Napi::Value Parameters(const Napi::CallbackInfo& info) {
    return locked(info, [&] { return named_shapes(info.Env(), model_->parameters()).template As<Napi::Value>(); });
  }

  // (name, Float32Array): copies one frozen parameter in.
  Napi::Value SetParameter(const Napi::CallbackInfo& info) {
    return transfer(info, "setParameter",
                    [&](const std::string& n, float* p, int64_t len) { model_->set_parameter(n, p, len); });
  }

  // (path, [{name, offset, dtype}]) -> [{name, count, index, value}]: frozen parameters taken
  // from a checked safetensors file, mapped (offsets from the file's start; dtype F32, F16 or BF16);
  // the result lists those that held NaN or infinities (the caller then refuses the model).
  Napi::Value LoadParameters(const Napi::CallbackInfo& info) {
    OpCall call(info, "loadParameters");
    const std::string path = call.string(0, "path");
    if (!info[1].IsArray()) call.fail_type("an array of {name, offset, dtype}", "tensors", info[1]);
    Napi::Array tensors = info[1].As<Napi::Array>();
    Napi::Env env = info.Env();
    return locked(info, [&] {
      const auto file = std::make_shared<WeightFile>(path);
      Napi::Array bad = Napi::Array::New(env);
      for (uint32_t i = 0; i < tensors.Length(); ++i) {
        Napi::Object t = tensors.Get(i).As<Napi::Object>();
        const std::string name = t.Get("name").As<Napi::String>().Utf8Value();
        const std::string dtype = t.Get("dtype").As<Napi::String>().Utf8Value();
        const int64_t offset = t.Get("offset").As<Napi::Number>().Int64Value();
        const DType type = dtype == "F32" ? DType::f32 : dtype == "BF16" ? DType::bf16 : DType::f16;
        if (dtype != "F32" && dtype != "BF16" && dtype != "F16")
          throw std::invalid_argument("loadParameters: " + name + " is " + dtype + ", not F32, F16 or BF16");
        const ParamStore::NonFinite r = model_->load_parameter(name, file, offset, type);
        if (r.count == 0) continue;
        Napi::Object o = Napi::Object::New(env);
        o.Set("name", name);
        o.Set("count", static_cast<double>(r.count));
        o.Set("index", static_cast<double>(r.first));
        o.Set("value", r.first_value);
        bad.Set(bad.Length(), o);
      }
      return bad.As<Napi::Value>();
    });
  }
};

void register_prior(Napi::Env env, Napi::Object exports);
void register_encoders(Napi::Env env, Napi::Object exports);
void register_decoders(Napi::Env env, Napi::Object exports);

}  // namespace lt
