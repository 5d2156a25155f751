// Argument checking and off-thread execution for op bindings.
//
// Every binding validates its arguments on the JS thread (throwing TypeError/RangeError with
// "Expected <what> for <name> but received <value>"), pins the typed arrays it will touch,
// then runs the op on a libuv worker (Napi::AsyncWorker) and settles a Promise. C++
// exceptions from the op become rejections; nothing here aborts the process.
#pragma once
#include <napi.h>

#include "ops.h"

#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace lt {

inline std::string describe(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? "true" : "false";
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (std::isnan(d)) return "NaN";
    std::string s = std::to_string(d);
    if (d == std::floor(d) && std::abs(d) < 1e15) s = std::to_string(static_cast<long long>(d));
    return s;
  }
  if (v.IsString()) return "'" + v.As<Napi::String>().Utf8Value() + "'";
  if (v.IsTypedArray()) {
    auto ta = v.As<Napi::TypedArray>();
    static const char* names[] = {"Int8Array",    "Uint8Array",    "Uint8ClampedArray", "Int16Array",
                                  "Uint16Array",  "Int32Array",    "Uint32Array",       "Float32Array",
                                  "Float64Array", "BigInt64Array", "BigUint64Array"};
    int t = static_cast<int>(ta.TypedArrayType());
    std::string name = (t >= 0 && t < 11) ? names[t] : "TypedArray";
    return name + " of length " + std::to_string(ta.ElementLength());
  }
  if (v.IsArray()) return "Array of length " + std::to_string(v.As<Napi::Array>().Length());
  if (v.IsFunction()) return "function";
  return "object";
}

class OpCall {
 public:
  OpCall(const Napi::CallbackInfo& info, const char* op) : info_(info), env_(info.Env()), op_(op) {}
  ~OpCall() {
    if (staging_ && !started_)  // a later argument was refused: free the copies made so far
      for (auto& s : *staged_) staging_->release(s.device);
  }
  OpCall(const OpCall&) = delete;
  OpCall& operator=(const OpCall&) = delete;

  Napi::Env env() const { return env_; }
  Napi::Value info(size_t i) const { return info_[i]; }

  [[noreturn]] void fail_type(const std::string& what, const std::string& name, const Napi::Value& got) const {
    throw Napi::TypeError::New(env_, op_ + ": Expected " + what + " for " + name + " but received " + describe(got));
  }
  [[noreturn]] void fail_range(const std::string& what, const std::string& name, const Napi::Value& got) const {
    throw Napi::RangeError::New(env_, op_ + ": Expected " + what + " for " + name + " but received " + describe(got));
  }

  // A positive integer size (dims of 0 are rejected: no op here has a use for them).
  int64_t dim(size_t i, const char* name) const { return dim_value(info_[i], name); }
  int64_t dim_of(const Napi::Object& o, const char* key) const { return dim_value(o.Get(key), key); }
  double number(size_t i, const char* name) const { return number_value(info_[i], name); }
  double number_of(const Napi::Object& o, const char* key) const { return number_value(o.Get(key), key); }
  bool flag(size_t i, const char* name) const { return flag_value(info_[i], name); }
  bool flag_of(const Napi::Object& o, const std::string& key) const { return flag_value(o.Get(key), key); }
  // A seed: a non-negative safe integer (JS numbers hold 53 bits).
  uint64_t seed(size_t i, const char* name) const {
    Napi::Value v = info_[i];
    if (!v.IsNumber()) fail_type("a non-negative integer", name, v);
    double d = v.As<Napi::Number>().DoubleValue();
    if (!(d >= 0) || d != std::floor(d) || d > 9007199254740991.0) fail_range("a non-negative integer", name, v);
    return static_cast<uint64_t>(d);
  }
  Napi::Object object(size_t i, const char* name) const {
    Napi::Value v = info_[i];
    if (!v.IsObject() || v.IsArray()) fail_type("an object", name, v);
    return v.As<Napi::Object>();
  }
  std::string string(size_t i, const char* name) const {
    Napi::Value v = info_[i];
    if (!v.IsString()) fail_type("a string", name, v);
    return v.As<Napi::String>().Utf8Value();
  }

  // A Float32Array of exactly `length` elements; pinned until the op finishes.
  float* f32(size_t i, const std::string& name, int64_t length) { return f32_value(info_[i], name, length, false); }
  // Same, or null/undefined for "not wanted" (returns nullptr).
  float* f32_optional(size_t i, const std::string& name, int64_t length) {
    return f32_value(info_[i], name, length, true);
  }

  // A typed array of another element type (ids, masks), exactly `length` long; pinned.
  template <typename T, napi_typedarray_type kType>
  T* typed(size_t i, const std::string& name, int64_t length, const char* type_name) {
    Napi::Value v = info_[i];
    std::string what = std::string("a ") + type_name + " of length " + std::to_string(length);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != kType) fail_type(what, name, v);
    auto arr = v.As<Napi::TypedArrayOf<T>>();
    if (static_cast<int64_t>(arr.ElementLength()) != length) fail_range(what, name, v);
    pins_.push_back(std::make_shared<Napi::Reference<Napi::Value>>(Napi::Persistent(v)));
    return arr.Data();
  }

  float* f32_value(const Napi::Value& v, const std::string& name, int64_t length, bool optional) {
    if (optional && (v.IsNull() || v.IsUndefined())) return nullptr;
    std::string what = "a Float32Array of length " + std::to_string(length);
    if (optional) what += " or null";
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) fail_type(what, name, v);
    auto arr = v.As<Napi::Float32Array>();
    if (static_cast<int64_t>(arr.ElementLength()) != length) fail_range(what, name, v);
    return static_cast<float*>(pin_data(v, arr.Data(), length * 4));
  }

  // A dtype name: "f32" | "bf16" | "f16".
  DType dtype(size_t i, const char* name) const {
    Napi::Value v = info_[i];
    DType t;
    if (!v.IsString() || !parse_dtype(v.As<Napi::String>().Utf8Value(), &t))
      fail_type("'f32', 'bf16' or 'f16'", name, v);
    return t;
  }

  // A tensor of `length` elements stored as `type`: a Float32Array for f32, a Uint16Array of
  // raw bits for bf16/f16. Pinned (and staged) like f32().
  void* typed_tensor(size_t i, const std::string& name, int64_t length, DType type) {
    if (type == DType::f32) return f32(i, name, length);
    Napi::Value v = info_[i];
    std::string what = std::string("a Uint16Array (") + dtype_name(type) + " bits) of length " + std::to_string(length);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint16_array) fail_type(what, name, v);
    auto arr = v.As<Napi::Uint16Array>();
    if (static_cast<int64_t>(arr.ElementLength()) != length) fail_range(what, name, v);
    return pin_data(v, arr.Data(), length * 2);
  }

  // Ops on `device` get device copies of every Float32Array argument (bindings call this
  // through backend_for before reading their arrays).
  void stage_through(Ops& device) {
    if (!device.host_memory()) staging_ = &device;
  }

  // Keeps a JS value (the object a method runs on) alive until the op finishes.
  void pin(const Napi::Value& v) {
    pins_.push_back(std::make_shared<Napi::Reference<Napi::Value>>(Napi::Persistent(v)));
  }

  Napi::Array array(size_t i, const char* name) const {
    Napi::Value v = info_[i];
    if (!v.IsArray()) fail_type("an Array", name, v);
    return v.As<Napi::Array>();
  }

  // Runs work() on a worker thread; resolves with undefined, or with the number it returns.
  Napi::Value run(std::function<void()> work) {
    return start(
        [w = std::move(work)]() {
          w();
          return std::nan("");
        },
        false);
  }
  Napi::Value run_number(std::function<double()> work) { return start(std::move(work), true); }

  struct Staged {
    void* host;
    float* device;
    int64_t bytes;
  };

 private:
  int64_t dim_value(const Napi::Value& v, const std::string& name) const {
    if (!v.IsNumber()) fail_type("a positive integer", name, v);
    double d = v.As<Napi::Number>().DoubleValue();
    if (!(d >= 1) || d != std::floor(d) || d > 9007199254740991.0) fail_range("a positive integer", name, v);
    return static_cast<int64_t>(d);
  }
  double number_value(const Napi::Value& v, const std::string& name) const {
    if (!v.IsNumber()) fail_type("a finite number", name, v);
    double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d)) fail_range("a finite number", name, v);
    return d;
  }
  bool flag_value(const Napi::Value& v, const std::string& name) const {
    if (!v.IsBoolean()) fail_type("a boolean", name, v);
    return v.As<Napi::Boolean>().Value();
  }

  // Pins v until the op finishes; on a device backend returns a device copy of its bytes.
  void* pin_data(const Napi::Value& v, void* host, int64_t bytes) {
    pins_.push_back(std::make_shared<Napi::Reference<Napi::Value>>(Napi::Persistent(v)));
    if (!staging_) return host;
    staged_->push_back({host, staging_->alloc(bytes > 0 ? (bytes + 3) / 4 : 1), bytes});
    return staged_->back().device;
  }

  class Worker : public Napi::AsyncWorker {
   public:
    Worker(Napi::Env env, std::string op, std::function<double()> work, bool returns_number,
           std::vector<std::shared_ptr<Napi::Reference<Napi::Value>>> pins)
        : Napi::AsyncWorker(env, op.c_str()),
          deferred_(Napi::Promise::Deferred::New(env)),
          op_(std::move(op)),
          work_(std::move(work)),
          returns_number_(returns_number),
          pins_(std::move(pins)) {}
    Napi::Promise promise() { return deferred_.Promise(); }
    void Execute() override {
      try {
        result_ = work_();
      } catch (const std::exception& e) {
        SetError(op_ + ": " + e.what());
      } catch (...) {
        SetError(op_ + ": unknown native error");
      }
    }
    void OnOK() override {
      pins_.clear();
      deferred_.Resolve(returns_number_ ? Napi::Number::New(Env(), result_) : Env().Undefined());
    }
    void OnError(const Napi::Error& e) override {
      pins_.clear();
      deferred_.Reject(e.Value());
    }

   private:
    Napi::Promise::Deferred deferred_;
    std::string op_;
    std::function<double()> work_;
    bool returns_number_;
    double result_ = 0.0;
    std::vector<std::shared_ptr<Napi::Reference<Napi::Value>>> pins_;
  };

  Napi::Value start(std::function<double()> work, bool returns_number) {
    if (staging_) {
      // Copy in, run, copy everything back (ops accumulate into their outputs), free.
      work = [work = std::move(work), staged = staged_, ops = staging_]() {
        struct Free {
          Ops* ops;
          std::vector<Staged>* list;
          ~Free() {
            for (auto& s : *list) ops->release(s.device);
          }
        } release{ops, staged.get()};
        for (auto& s : *staged) ops->upload_bytes(s.device, s.host, s.bytes);
        double result = work();
        for (auto& s : *staged) ops->download_bytes(s.host, s.device, s.bytes);
        return result;
      };
    }
    started_ = true;
    auto* worker = new Worker(env_, op_, std::move(work), returns_number, std::move(pins_));
    Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
  }

  const Napi::CallbackInfo& info_;
  Napi::Env env_;
  std::string op_;
  std::vector<std::shared_ptr<Napi::Reference<Napi::Value>>> pins_;
  Ops* staging_ = nullptr;
  bool started_ = false;
  std::shared_ptr<std::vector<Staged>> staged_ = std::make_shared<std::vector<Staged>>();
};

}  // namespace lt
