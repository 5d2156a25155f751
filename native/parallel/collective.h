// Collectives of data-parallel training: every process holds the same adapters, computes
// gradients on its own shard of the batch, and the processes sum them (allreduce) before each
// optimizer step; rank 0's adapters are broadcast at the start. The engines are the ones
// PyTorch uses: Gloo over TCP for host memory, NCCL for GPU memory.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace lt {

struct CollectiveConfig {
  int rank = 0;
  int size = 1;
  std::string store_host;  // MASTER_ADDR
  int store_port = 0;      // MASTER_PORT
  std::string prefix;      // keys of this group in the store
  std::string hostname;    // the address other processes reach this one at (Gloo), or
  std::string iface;       // the network interface to take it from (GLOO_SOCKET_IFNAME)
  std::chrono::milliseconds timeout{300000};
};

class Collective {
 public:
  virtual ~Collective() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string engine() const = 0;
  // Whether the buffers of these calls are device memory (NCCL) or host memory (Gloo).
  virtual bool device_memory() const = 0;
  // data (n) = the sum over processes of data (n), in place.
  virtual void allreduce_sum(float* data, int64_t n) = 0;
  // data (n) = root's data (n), in place.
  virtual void broadcast(float* data, int64_t n, int root) = 0;
  // Starts allreduce_sum(data, n) and returns, so that the caller computes meanwhile (every
  // process starts the same sums in the same order); data must stay untouched until
  // wait_all(). Engines that cannot overlap sum at once.
  virtual void start_allreduce_sum(float* data, int64_t n) { allreduce_sum(data, n); }
  // Returns once every started sum is complete; throws the first one's error.
  virtual void wait_all() {}
};

// Gloo over TCP (rendezvous through the store). Throws, saying how to get Gloo, in a build
// without it.
std::unique_ptr<Collective> make_gloo_collective(const CollectiveConfig& config);
bool have_gloo();
// NCCL on this process's GPU (rank 0's communicator id travels through the store). Throws in a
// build without CUDA, or when libnccl.so.2 cannot be opened, saying how to get it.
std::unique_ptr<Collective> make_nccl_collective(const CollectiveConfig& config);

}  // namespace lt
