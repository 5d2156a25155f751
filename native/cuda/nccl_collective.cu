// Collectives on GPU memory through NCCL, as PyTorch's DDP sums gradients on GPUs: rank 0
// makes the communicator's id and hands it to the others through the rendezvous store.
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "../parallel/collective.h"
#include "../parallel/store_client.h"
#include "common.cuh"
#include "library.h"
#include "nccl_api.h"

namespace lt {
namespace cuda {

const Nccl* nccl(std::string* why) {
  static std::once_flag once;
  static Nccl api;
  static const Nccl* loaded = nullptr;
  static std::string failure;
  std::call_once(once, [] {
    std::string tried;
    void* lib = open_library("LORA_TRAIN_NCCL", "libnccl.so.2", &tried);
    if (!lib) {
      failure = "NCCL not found (tried " + tried +
                "); install it with `pip install nvidia-nccl-cu13` (or -cu12) or NVIDIA's libnccl2 package and add "
                "its lib folder to LD_LIBRARY_PATH, or set LORA_TRAIN_NCCL to the file";
      return;
    }
    std::string missing;
    load_symbol(lib, api.get_unique_id, "ncclGetUniqueId", &missing);
    load_symbol(lib, api.comm_init_rank, "ncclCommInitRank", &missing);
    load_symbol(lib, api.all_reduce, "ncclAllReduce", &missing);
    load_symbol(lib, api.broadcast, "ncclBroadcast", &missing);
    load_symbol(lib, api.comm_destroy, "ncclCommDestroy", &missing);
    load_symbol(lib, api.comm_abort, "ncclCommAbort", &missing);
    load_symbol(lib, api.error_string, "ncclGetErrorString", &missing);
    if (!missing.empty()) {
      failure = "the NCCL library found lacks " + missing + " (an older major version?)";
      return;
    }
    loaded = &api;
  });
  if (why) *why = failure;
  return loaded;
}

namespace {

class NcclCollective : public Collective {
 public:
  explicit NcclCollective(const CollectiveConfig& c) : rank_(c.rank), size_(c.size) {
    std::string why;
    api_ = nccl(&why);
    if (!api_) throw std::runtime_error(why);
    ncclUniqueId id;
    StoreClient store(c.store_host, c.store_port, c.timeout);
    const std::string key = c.prefix + "/nccl-id";
    if (rank_ == 0) {
      check(api_->get_unique_id(&id), "ncclGetUniqueId");
      store.set(key, std::vector<char>(id.internal, id.internal + sizeof id.internal));
    } else {
      const std::vector<char> bytes = store.get(key);
      if (bytes.size() != sizeof id.internal) throw std::runtime_error("NCCL: rank 0 sent an id of the wrong size");
      std::copy(bytes.begin(), bytes.end(), id.internal);
    }
    check(api_->comm_init_rank(&comm_, size_, id, rank_), "ncclCommInitRank");
  }

  ~NcclCollective() override {
    if (comm_) api_->comm_destroy(comm_);
    if (stream_) cudaStreamDestroy(stream_);
    if (ready_) cudaEventDestroy(ready_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string engine() const override { return "nccl"; }
  bool device_memory() const override { return true; }

  // Device buffers, on the default stream the backend's kernels run on, so the sum follows
  // the backward that wrote them; complete on return.
  void allreduce_sum(float* data, int64_t n) override {
    check(api_->all_reduce(data, data, static_cast<size_t>(n), ncclFloat32, ncclSum, comm_, nullptr), "ncclAllReduce");
    LT_CUDA(cudaDeviceSynchronize());
  }

  // On a stream of its own that does not wait for the default one as a whole (non-blocking),
  // only for the kernels queued there before this call: the sum overlaps the backward's later
  // kernels, which leave this bucket alone.
  void start_allreduce_sum(float* data, int64_t n) override {
    if (!stream_) {
      LT_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
      LT_CUDA(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
    }
    LT_CUDA(cudaEventRecord(ready_, nullptr));
    LT_CUDA(cudaStreamWaitEvent(stream_, ready_, 0));
    check(api_->all_reduce(data, data, static_cast<size_t>(n), ncclFloat32, ncclSum, comm_, stream_), "ncclAllReduce");
  }

  void wait_all() override {
    if (stream_) LT_CUDA(cudaStreamSynchronize(stream_));
  }

  void broadcast(float* data, int64_t n, int root) override {
    check(api_->broadcast(data, data, static_cast<size_t>(n), ncclFloat32, root, comm_, nullptr), "ncclBroadcast");
    LT_CUDA(cudaDeviceSynchronize());
  }

 private:
  void check(ncclResult_t r, const char* what) const {
    if (r != ncclSuccess) throw std::runtime_error(std::string("NCCL: ") + what + ": " + api_->error_string(r));
  }

  const Nccl* api_ = nullptr;
  int rank_, size_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;  // started sums
  cudaEvent_t ready_ = nullptr;    // the default stream's point a started sum waits for
};

}  // namespace
}  // namespace cuda

std::unique_ptr<Collective> make_nccl_collective(const CollectiveConfig& config) {
  return std::make_unique<cuda::NcclCollective>(config);
}

}  // namespace lt
