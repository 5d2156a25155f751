// The part of nccl.h lora-train uses, for the CUDA test emulator: the same names, types and
// signatures as NVIDIA's header. nccl.cpp implements them across processes on Gloo.
#pragma once
#include <cstddef>

#include "cuda_runtime.h"

#define NCCL_MAJOR 2
#define NCCL_UNIQUE_ID_BYTES 128
typedef struct {
  char internal[NCCL_UNIQUE_ID_BYTES];
} ncclUniqueId;
typedef struct EmuNcclComm* ncclComm_t;
typedef enum {
  ncclSuccess = 0,
  ncclUnhandledCudaError = 1,
  ncclSystemError = 2,
  ncclInternalError = 3,
  ncclInvalidArgument = 4,
  ncclInvalidUsage = 5,
  ncclRemoteError = 6
} ncclResult_t;
typedef enum { ncclSum = 0, ncclProd = 1, ncclMax = 2, ncclMin = 3, ncclAvg = 4 } ncclRedOp_t;
typedef enum { ncclFloat32 = 7, ncclFloat = 7 } ncclDataType_t;

#define LT_EMU_NCCL extern "C" __attribute__((visibility("default")))
LT_EMU_NCCL ncclResult_t ncclGetUniqueId(ncclUniqueId* uniqueId);
LT_EMU_NCCL ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank);
LT_EMU_NCCL ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
                                       ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream);
LT_EMU_NCCL ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
                                       int root, ncclComm_t comm, cudaStream_t stream);
LT_EMU_NCCL ncclResult_t ncclCommDestroy(ncclComm_t comm);
LT_EMU_NCCL ncclResult_t ncclCommAbort(ncclComm_t comm);
LT_EMU_NCCL const char* ncclGetErrorString(ncclResult_t result);
