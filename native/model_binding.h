// Helpers shared by the model classes exposed to JS.
#pragma once
#include <napi.h>

#include <vector>

#include "models/param_store.h"

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

void register_encoders(Napi::Env env, Napi::Object exports);

}  // namespace lt
