// cuBLASLt, loaded at run time. The addon links no CUDA library dynamically, so it loads (and
// runs on CPU) where none is installed; the CUDA backend opens libcublasLt when first used and
// says where it looked when it cannot.
#pragma once
#include <cublasLt.h>

#include <string>

namespace lt::cuda {

// The entry points used, typed from cublasLt.h's own declarations.
struct CublasLt {
  decltype(&cublasLtCreate) create;
  decltype(&cublasLtMatmul) matmul;
  decltype(&cublasLtMatmulDescCreate) desc_create;
  decltype(&cublasLtMatmulDescSetAttribute) desc_set;
  decltype(&cublasLtMatrixLayoutCreate) layout_create;
  decltype(&cublasLtMatmulPreferenceCreate) pref_create;
  decltype(&cublasLtMatmulPreferenceSetAttribute) pref_set;
  decltype(&cublasLtMatmulPreferenceDestroy) pref_destroy;
  decltype(&cublasLtMatmulAlgoGetHeuristic) heuristic;
  decltype(&cublasLtGetStatusString) status_string;
};

// The loaded library, or nullptr with *why saying what was tried ("" on success).
// LORA_TRAIN_CUBLASLT names the file to open; otherwise the loader's search path
// (LD_LIBRARY_PATH), then $CUDA_HOME/lib64 and /usr/local/cuda/lib64.
const CublasLt* cublaslt(std::string* why);

}  // namespace lt::cuda
