// Helpers shared by the model classes exposed to JS.
#pragma once
#include <napi.h>

#include <mutex>
#include <string>
#include <vector>

#include "models/param_store.h"
#include "napi_call.h"

namespace lt {

// [{name, shape}] for a model's parameter list.
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

// model.parameters() as [{name, shape}], under the model's lock.
template <typename Model>
Napi::Value parameters_of(const Napi::CallbackInfo& info, Model& model) {
  std::lock_guard<std::mutex> lock(model.mutex());
  return named_shapes(info.Env(), model.parameters());
}

// (name, Float32Array): copies one frozen parameter in, under the model's lock.
template <typename Model>
Napi::Value set_parameter_of(const Napi::CallbackInfo& info, Model& model) {
  OpCall call(info, "setParameter");
  std::string name = call.string(0, "name");
  Napi::Value v = info[1];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    call.fail_type("a Float32Array", "data", v);
  auto arr = v.As<Napi::Float32Array>();
  std::lock_guard<std::mutex> lock(model.mutex());
  try {
    model.set_parameter(name, arr.Data(), static_cast<int64_t>(arr.ElementLength()));
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), e.what());
  }
  return info.Env().Undefined();
}

void register_encoders(Napi::Env env, Napi::Object exports);

}  // namespace lt
