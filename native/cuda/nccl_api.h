// NCCL, loaded at run time as cuBLASLt is: the addon links no CUDA library dynamically, so it
// loads where none is installed; data-parallel training on GPUs opens libnccl.so.2 when it
// starts and says where it looked when it cannot.
#pragma once
#include <nccl.h>

#include <string>

namespace lt::cuda {

// The entry points used, typed from nccl.h's own declarations.
struct Nccl {
  decltype(&ncclGetUniqueId) get_unique_id;
  decltype(&ncclCommInitRank) comm_init_rank;
  decltype(&ncclAllReduce) all_reduce;
  decltype(&ncclBroadcast) broadcast;
  decltype(&ncclCommDestroy) comm_destroy;
  decltype(&ncclCommAbort) comm_abort;
  decltype(&ncclGetErrorString) error_string;
};

// The loaded library, or nullptr with *why saying what was tried. LORA_TRAIN_NCCL names the
// file to open; otherwise the loader's search path (LD_LIBRARY_PATH), then the folders of
// NVIDIA's pip wheel and of a CUDA install.
const Nccl* nccl(std::string* why);

}  // namespace lt::cuda
