#include "collective_binding.h"

#include <string>

namespace lt {
namespace {

class CollectiveWrap : public Napi::ObjectWrap<CollectiveWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(
        env, "Collective",
        {InstanceMethod("connect", &CollectiveWrap::Connect), InstanceMethod("allreduce", &CollectiveWrap::Allreduce),
         InstanceMethod("broadcast", &CollectiveWrap::Broadcast)});
  }

  // ({engine: 'gloo' | 'nccl', rank, size, storeHost, storePort, prefix, hostname, iface, timeoutMs})
  explicit CollectiveWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CollectiveWrap>(info) {
    OpCall call(info, "Collective");
    Napi::Object o = call.object(0, "config");
    const Napi::Value engine = o.Get("engine");
    if (!engine.IsString() ||
        (engine.As<Napi::String>().Utf8Value() != "gloo" && engine.As<Napi::String>().Utf8Value() != "nccl"))
      call.fail_type("'gloo' or 'nccl'", "engine", engine);
    nccl_ = engine.As<Napi::String>().Utf8Value() == "nccl";
    config_.size = static_cast<int>(call.dim_of(o, "size"));
    const double rank = call.number_of(o, "rank");
    if (rank < 0 || rank >= config_.size || rank != static_cast<int>(rank))
      call.fail_range("an integer in [0, size)", "rank", o.Get("rank"));
    config_.rank = static_cast<int>(rank);
    config_.store_host = string_of(call, o, "storeHost");
    config_.store_port = static_cast<int>(call.dim_of(o, "storePort"));
    config_.prefix = string_of(call, o, "prefix");
    config_.hostname = string_of(call, o, "hostname");
    config_.iface = string_of(call, o, "iface");
    config_.timeout = std::chrono::milliseconds(call.dim_of(o, "timeoutMs"));
  }

  std::shared_ptr<SharedCollective> shared() const { return shared_; }

 private:
  static std::string string_of(OpCall& call, const Napi::Object& o, const char* key) {
    const Napi::Value v = o.Get(key);
    if (!v.IsString()) call.fail_type("a string", key, v);
    return v.As<Napi::String>().Utf8Value();
  }

  Napi::Value Connect(const Napi::CallbackInfo& info) {
    OpCall call(info, "connect");
    call.pin(Value());
    auto shared = shared_;
    const CollectiveConfig config = config_;
    const bool nccl = nccl_;
    return call.run([shared, config, nccl] {
      std::lock_guard<std::mutex> lock(shared->mutex);
      if (!shared->collective) shared->collective = nccl ? make_nccl_collective(config) : make_gloo_collective(config);
    });
  }

  // (Float32Array) -> Promise: the sum over processes, in place.
  Napi::Value Allreduce(const Napi::CallbackInfo& info) {
    OpCall call(info, "allreduce");
    const int64_t n = length_of(call, 0);
    float* data = call.f32(0, "data", n);
    auto shared = connected(call);
    return call.run([shared, data, n] {
      std::lock_guard<std::mutex> lock(shared->mutex);
      shared->collective->allreduce_sum(data, n);
    });
  }

  // (Float32Array, root) -> Promise: root's values, in place.
  Napi::Value Broadcast(const Napi::CallbackInfo& info) {
    OpCall call(info, "broadcast");
    const int64_t n = length_of(call, 0);
    float* data = call.f32(0, "data", n);
    const double root = call.number(1, "root");
    if (root < 0 || root >= config_.size || root != static_cast<int>(root))
      call.fail_range("a rank in [0, size)", "root", info[1]);
    auto shared = connected(call);
    return call.run([shared, data, n, root] {
      std::lock_guard<std::mutex> lock(shared->mutex);
      shared->collective->broadcast(data, n, static_cast<int>(root));
    });
  }

  static int64_t length_of(OpCall& call, size_t i) {
    const Napi::Value arg = call.info(i);
    if (!arg.IsTypedArray() || arg.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      call.fail_type("a Float32Array", "data", arg);
    return static_cast<int64_t>(arg.As<Napi::Float32Array>().ElementLength());
  }

  std::shared_ptr<SharedCollective> connected(OpCall& call) {
    if (!shared_->collective) throw Napi::Error::New(call.env(), "Collective: call connect() first");
    if (shared_->collective->device_memory())
      throw Napi::Error::New(call.env(), "Collective: an NCCL collective sums GPU memory only (allreduceGrads)");
    call.pin(Value());
    return shared_;
  }

  CollectiveConfig config_;
  bool nccl_ = false;
  std::shared_ptr<SharedCollective> shared_ = std::make_shared<SharedCollective>();
};

// The class per JS environment (each worker thread loads the addon anew), to tell a
// Collective from another object.
struct ClassRef {
  Napi::FunctionReference constructor;
};

}  // namespace

std::shared_ptr<SharedCollective> collective_arg(OpCall& call, size_t i) {
  const Napi::Value v = call.info(i);
  ClassRef* ref = call.env().GetInstanceData<ClassRef>();
  if (!v.IsObject() || !ref || !v.As<Napi::Object>().InstanceOf(ref->constructor.Value()))
    call.fail_type("a Collective", "collective", v);
  auto shared = CollectiveWrap::Unwrap(v.As<Napi::Object>())->shared();
  if (!shared->collective) throw Napi::Error::New(call.env(), "Collective: call connect() first");
  call.pin(v);
  return shared;
}

void register_collective(Napi::Env env, Napi::Object exports) {
  Napi::Function cls = CollectiveWrap::Define(env);
  env.SetInstanceData(new ClassRef{Napi::Persistent(cls)});
  exports.Set("Collective", cls);
  exports.Set("haveGloo", Napi::Boolean::New(env, have_gloo()));
#ifdef LORA_TRAIN_HAVE_NCCL
  exports.Set("haveNccl", Napi::Boolean::New(env, true));
#else
  exports.Set("haveNccl", Napi::Boolean::New(env, false));
#endif
}

}  // namespace lt
