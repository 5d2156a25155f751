// NCCL for the CUDA test emulator, across processes: a communicator is a Gloo group (device
// memory is host memory here), met through the run's rendezvous store, whose address the
// unique id carries (ncclGetUniqueId reads MASTER_ADDR and MASTER_PORT, as every rank of a
// launched run has them). Buffers are checked to be device memory, as a GPU's NCCL would fault
// on a host pointer, and the calls refuse what lora-train never asks for.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>

#include "../../native/parallel/collective.h"
#include "include/cuda_runtime.h"
#include "include/nccl.h"

struct EmuNcclComm {
  std::unique_ptr<lt::Collective> group;
};

namespace {

thread_local std::string last_error;

ncclResult_t fail(ncclResult_t code, std::string why) {
  last_error = std::move(why);
  std::fprintf(stderr, "emulated NCCL: %s\n", last_error.c_str());
  return code;
}

}  // namespace

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  const char* host = std::getenv("MASTER_ADDR");
  const char* port = std::getenv("MASTER_PORT");
  if (!host || !port) return fail(ncclInvalidUsage, "ncclGetUniqueId needs MASTER_ADDR and MASTER_PORT here");
  std::random_device random;
  std::memset(id->internal, 0, sizeof id->internal);
  std::snprintf(id->internal, sizeof id->internal, "%s %s %08x%08x", host, port, random(), random());
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  char host[100] = {}, token[32] = {};
  int port = 0;
  if (std::sscanf(id.internal, "%99s %d %31s", host, &port, token) != 3)
    return fail(ncclInvalidArgument, "ncclCommInitRank: not an id ncclGetUniqueId made");
  if (nranks < 1 || rank < 0 || rank >= nranks) return fail(ncclInvalidArgument, "ncclCommInitRank: bad rank");
  lt::CollectiveConfig config;
  config.rank = rank;
  config.size = nranks;
  config.store_host = host;
  config.store_port = port;
  config.prefix = std::string("emulated-nccl/") + token;
  config.hostname = "127.0.0.1";
  try {
    *comm = new EmuNcclComm{lt::make_gloo_collective(config)};
  } catch (const std::exception& e) {
    return fail(ncclSystemError, e.what());
  }
  return ncclSuccess;
}

namespace {

ncclResult_t checked(const void* send, void* recv, size_t count, ncclDataType_t type, ncclComm_t comm) {
  if (!comm) return fail(ncclInvalidArgument, "no communicator");
  if (type != ncclFloat32) return fail(ncclInvalidArgument, "only ncclFloat32 is emulated");
  if (!lt_emu::is_device_span(send, count * 4) || !lt_emu::is_device_span(recv, count * 4))
    return fail(ncclInvalidArgument, "a buffer outside device memory (a host pointer?)");
  return ncclSuccess;
}

}  // namespace

ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t) {
  if (ncclResult_t r = checked(send, recv, count, type, comm); r != ncclSuccess) return r;
  if (op != ncclSum) return fail(ncclInvalidArgument, "only ncclSum is emulated");
  lt_emu::DeviceAccess access;
  try {
    if (send != recv) std::memmove(recv, send, count * 4);
    comm->group->allreduce_sum(static_cast<float*>(recv), static_cast<int64_t>(count));
  } catch (const std::exception& e) {
    return fail(ncclRemoteError, e.what());
  }
  return ncclSuccess;
}

ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, ncclDataType_t type, int root, ncclComm_t comm,
                           cudaStream_t) {
  if (ncclResult_t r = checked(send, recv, count, type, comm); r != ncclSuccess) return r;
  lt_emu::DeviceAccess access;
  try {
    if (send != recv) std::memmove(recv, send, count * 4);
    comm->group->broadcast(static_cast<float*>(recv), static_cast<int64_t>(count), root);
  } catch (const std::exception& e) {
    return fail(ncclRemoteError, e.what());
  }
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) { return ncclCommDestroy(comm); }

const char* ncclGetErrorString(ncclResult_t result) {
  return result == ncclSuccess ? "no error" : last_error.empty() ? "error" : last_error.c_str();
}
