#include <stdexcept>

#include "collective.h"
#include "serial_worker.h"
#include "store_client.h"

#ifdef LORA_TRAIN_HAVE_GLOO
#include <gloo/allreduce.h>
#include <gloo/broadcast.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#endif

namespace lt {

#ifdef LORA_TRAIN_HAVE_GLOO
namespace {

// Gloo's rendezvous store interface over lora-train's store client.
class GlooStore : public gloo::rendezvous::Store {
 public:
  explicit GlooStore(StoreClient& client) : client_(client) {}
  void set(const std::string& key, const std::vector<char>& data) override { client_.set(key, data); }
  std::vector<char> get(const std::string& key) override { return client_.get(key); }
  void wait(const std::vector<std::string>& keys) override {
    for (const std::string& k : keys) client_.get(k);
  }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds&) override { wait(keys); }

 private:
  StoreClient& client_;
};

class GlooCollective : public Collective {
 public:
  explicit GlooCollective(const CollectiveConfig& c) : timeout_(c.timeout) {
    StoreClient client(c.store_host, c.store_port, c.timeout);
    GlooStore store(client);
    gloo::rendezvous::PrefixStore prefixed(c.prefix, store);
    gloo::transport::tcp::attr attr;
    if (c.iface.empty())
      attr.hostname = c.hostname;
    else
      attr.iface = c.iface;
    auto device = gloo::transport::tcp::CreateDevice(attr);
    context_ = std::make_shared<gloo::rendezvous::Context>(c.rank, c.size);
    context_->setTimeout(c.timeout);
    context_->connectFullMesh(prefixed, device);
  }

  int rank() const override { return context_->rank; }
  int size() const override { return context_->size; }
  std::string engine() const override { return "gloo"; }
  bool device_memory() const override { return false; }

  void allreduce_sum(float* data, int64_t n) override {
    gloo::AllreduceOptions opts(context_);
    opts.setOutput(data, static_cast<size_t>(n));
    opts.setReduceFunction(static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
    opts.setTimeout(timeout_);
    opts.setTag(next_tag());
    gloo::allreduce(opts);
  }

  // Gloo's calls block, so the started sums run in order on a thread of their own.
  void start_allreduce_sum(float* data, int64_t n) override {
    if (!worker_) worker_ = std::make_unique<SerialWorker>();
    worker_->post([this, data, n] { allreduce_sum(data, n); });
  }

  void wait_all() override {
    if (worker_) worker_->drain();
  }

  void broadcast(float* data, int64_t n, int root) override {
    gloo::BroadcastOptions opts(context_);
    opts.setOutput(data, static_cast<size_t>(n));
    opts.setRoot(root);
    opts.setTimeout(timeout_);
    opts.setTag(next_tag());
    gloo::broadcast(opts);
  }

 private:
  uint32_t next_tag() { return tag_++; }

  std::shared_ptr<gloo::rendezvous::Context> context_;
  std::chrono::milliseconds timeout_;
  uint32_t tag_ = 0;
  std::unique_ptr<SerialWorker> worker_;  // declared last: joined before the context goes
};

}  // namespace

bool have_gloo() { return true; }

std::unique_ptr<Collective> make_gloo_collective(const CollectiveConfig& config) {
  try {
    return std::make_unique<GlooCollective>(config);
  } catch (const gloo::Exception& e) {
    throw std::runtime_error(std::string("Gloo: ") + e.what());
  }
}

#else

bool have_gloo() { return false; }

std::unique_ptr<Collective> make_gloo_collective(const CollectiveConfig&) {
  throw std::runtime_error(
      "this build of lora-train has no Gloo, which training in several CPU processes needs: install it "
      "(Debian/Ubuntu: apt-get install libgloo-dev) and build again (npm run build:native)");
}

#endif

#ifndef LORA_TRAIN_HAVE_NCCL
std::unique_ptr<Collective> make_nccl_collective(const CollectiveConfig&) {
  throw std::runtime_error(
      "this build of lora-train has no NCCL (it needs the CUDA backend and nccl.h at build time: "
      "scripts/cuda-toolkit.sh fetches it); GPU gradients then travel through host memory over Gloo");
}
#endif

}  // namespace lt
