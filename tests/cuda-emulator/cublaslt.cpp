// cuBLASLt for the CUDA test emulator: column-major D = alpha op(A) op(B) + beta C (+ bias per
// row of D), checked the way cuBLASLt checks its arguments. Operands are fp32, bf16 or fp16
// with fp32 products and sums; TF32 compute rounds fp32 operands to TF32 first, as tensor cores
// do. The heuristic records the alignments the caller promised, and the matmul refuses
// pointers that break them, as an algorithm chosen for them would fail on a GPU, and operands
// outside device memory. LORA_TRAIN_EMULATOR_CUBLASLT=no-bias-epilogue,no-lowp makes the
// heuristic find no algorithm for the bias epilogue or for bf16/fp16 operands (as a GPU's
// cuBLASLt may), so the caller's fallbacks run.
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "include/cublasLt.h"
#include "include/cuda_bf16.h"
#include "include/cuda_fp16.h"

struct EmuLtContext {};
struct EmuLtMatmulDesc {
  cublasComputeType_t compute;
  cudaDataType_t scale;
  cublasOperation_t trans_a = CUBLAS_OP_N, trans_b = CUBLAS_OP_N;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  cudaDataType_t bias_type = CUDA_R_32F;
  bool bias_type_set = false;
};
struct EmuLtMatrixLayout {
  cudaDataType_t type;
  uint64_t rows, cols;
  int64_t ld;
};
struct EmuLtMatmulPreference {
  uint32_t align_a = 256, align_b = 256, align_c = 256, align_d = 256;
};

namespace {

bool known_type(cudaDataType_t t) { return t == CUDA_R_32F || t == CUDA_R_16BF || t == CUDA_R_16F; }
size_t elem_bytes(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : 2; }
// Bytes a column-major layout spans.
size_t span_bytes(const EmuLtMatrixLayout* l) {
  return ((l->cols - 1) * static_cast<size_t>(l->ld) + l->rows) * elem_bytes(l->type);
}

// Why the last call on this thread returned CUBLAS_STATUS_INVALID_VALUE (cublasLtGetStatusString).
thread_local std::string invalid_detail;
cublasStatus_t invalid(std::string detail) {
  invalid_detail = std::move(detail);
  return CUBLAS_STATUS_INVALID_VALUE;
}

bool refused(const char* what) {
  const char* v = std::getenv("LORA_TRAIN_EMULATOR_CUBLASLT");
  return v && std::strstr(v, what);
}

float load(const void* p, cudaDataType_t t, size_t i) {
  if (t == CUDA_R_32F) return static_cast<const float*>(p)[i];
  if (t == CUDA_R_16BF) return static_cast<const __nv_bfloat16*>(p)[i];
  return static_cast<const __half*>(p)[i];
}
void store(void* p, cudaDataType_t t, size_t i, float v) {
  if (t == CUDA_R_32F)
    static_cast<float*>(p)[i] = v;
  else if (t == CUDA_R_16BF)
    static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
  else
    static_cast<__half*>(p)[i] = __float2half_rn(v);
}
// fp32 to TF32 (10 mantissa bits), to nearest with ties away from zero.
float tf32(float x) {
  unsigned u = __float_as_uint(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return x;  // NaN stays NaN
  if ((u & 0x7f800000u) != 0x7f800000u) u += 0x1000u;
  return __uint_as_float(u & 0xffffe000u);
}
uint32_t alignment_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al) al /= 2;
  return al;
}

// What the operation is, or why cuBLASLt would refuse it.
struct Problem {
  uint64_t m, n, k;
  std::string error;
  bool unsupported = false;
};
Problem check(const EmuLtMatmulDesc* desc, const EmuLtMatrixLayout* a, const EmuLtMatrixLayout* b,
              const EmuLtMatrixLayout* c, const EmuLtMatrixLayout* d) {
  Problem p{};
  if (!desc || !a || !b || !c || !d) return p.error = "a null descriptor", p;
  p.m = d->rows, p.n = d->cols;
  const uint64_t a_rows = desc->trans_a == CUBLAS_OP_N ? a->rows : a->cols,
                 a_cols = desc->trans_a == CUBLAS_OP_N ? a->cols : a->rows;
  const uint64_t b_rows = desc->trans_b == CUBLAS_OP_N ? b->rows : b->cols,
                 b_cols = desc->trans_b == CUBLAS_OP_N ? b->cols : b->rows;
  p.k = a_cols;
  if (c->rows != d->rows || c->cols != d->cols || c->ld != d->ld || c->type != d->type)
    p.error = "C and D differ (in-place only here)";
  else if (a_rows != p.m || b_cols != p.n || b_rows != p.k)
    p.error = "op(A) " + std::to_string(a_rows) + "x" + std::to_string(a_cols) + ", op(B) " + std::to_string(b_rows) +
              "x" + std::to_string(b_cols) + ", D " + std::to_string(p.m) + "x" + std::to_string(p.n) +
              " do not multiply";
  for (const EmuLtMatrixLayout* l : {a, b, d})
    if (p.error.empty() && (l->ld < static_cast<int64_t>(l->rows) || l->rows == 0 || l->cols == 0))
      p.error = "a " + std::to_string(l->rows) + "x" + std::to_string(l->cols) + " layout with leading dimension " +
                std::to_string(l->ld);
  if (!p.error.empty()) return p;
  const bool fp32 = a->type == CUDA_R_32F;
  if (a->type != b->type || desc->scale != CUDA_R_32F || (d->type != CUDA_R_32F && d->type != a->type) ||
      (desc->compute == CUBLAS_COMPUTE_32F_FAST_TF32 && !fp32) || (fp32 && d->type != CUDA_R_32F))
    p.unsupported = true, p.error = "an unsupported combination of types";
  if (desc->epilogue == CUBLASLT_EPILOGUE_BIAS) {
    const cudaDataType_t bias_type = desc->bias_type_set ? desc->bias_type : d->type;
    if (!desc->bias)
      p.error = "the bias epilogue without a bias pointer";
    else if (bias_type != d->type)  // as cuBLASLt 13 on an H200: no fp32 bias beside a bf16 D
      p.unsupported = true, p.error = "a bias of another type than D";
  }
  return p;
}

}  // namespace

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  *handle = new EmuLtContext;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute, cudaDataType_t scale) {
  if (compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_FAST_TF32) return CUBLAS_STATUS_NOT_SUPPORTED;
  *desc = new EmuLtMatmulDesc{compute, scale};
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t size) {
  auto take = [&](auto& field) {
    if (size != sizeof(field)) return invalid("a descriptor attribute of the wrong size");
    std::memcpy(&field, buf, size);
    return CUBLAS_STATUS_SUCCESS;
  };
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
      return take(desc->trans_a);
    case CUBLASLT_MATMUL_DESC_TRANSB:
      return take(desc->trans_b);
    case CUBLASLT_MATMUL_DESC_EPILOGUE:
      return take(desc->epilogue);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
      return take(desc->bias);
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE:
      desc->bias_type_set = true;
      return take(desc->bias_type);
  }
  return invalid("a descriptor attribute the emulator lacks");
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType_t type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  if (!known_type(type)) return CUBLAS_STATUS_NOT_SUPPORTED;
  *layout = new EmuLtMatrixLayout{type, rows, cols, ld};
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  *pref = new EmuLtMatmulPreference;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void* buf,
                                                    size_t size) {
  if (size != (attr == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES ? sizeof(uint64_t) : sizeof(uint32_t)))
    return invalid("a preference attribute of the wrong size");
  if (attr == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES) return CUBLAS_STATUS_SUCCESS;
  uint32_t* field = attr == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES   ? &pref->align_a
                    : attr == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES ? &pref->align_b
                    : attr == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES ? &pref->align_c
                    : attr == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES ? &pref->align_d
                                                                         : nullptr;
  if (!field) return invalid("a preference attribute the emulator lacks");
  std::memcpy(field, buf, size);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  delete pref;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t* results, int* found) {
  *found = 0;
  if (!handle || !pref || requested < 1) return invalid("a null handle or preference, or no result asked for");
  const Problem p = check(desc, a, b, c, d);
  if (p.unsupported) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (!p.error.empty()) return invalid(p.error);
  if ((refused("no-bias-epilogue") && desc->epilogue == CUBLASLT_EPILOGUE_BIAS) ||
      (refused("no-lowp") && a->type != CUDA_R_32F))
    return CUBLAS_STATUS_SUCCESS;  // no algorithm: *found stays 0
  results[0] = {};
  results[0].algo.data[0] = pref->align_a, results[0].algo.data[1] = pref->align_b;
  results[0].algo.data[2] = pref->align_c, results[0].algo.data[3] = pref->align_d;
  results[0].state = CUBLAS_STATUS_SUCCESS;
  *found = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha_p, const void* A,
                              cublasLtMatrixLayout_t a, const void* B, cublasLtMatrixLayout_t b, const void* beta_p,
                              const void* C, cublasLtMatrixLayout_t c, void* D, cublasLtMatrixLayout_t d,
                              const cublasLtMatmulAlgo_t* algo, void*, size_t, cudaStream_t) {
  if (!handle || !algo || !alpha_p || !beta_p) return invalid("a null handle, algorithm, alpha or beta");
  const Problem p = check(desc, a, b, c, d);
  if (p.unsupported) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (!p.error.empty()) return invalid(p.error);
  if (alignment_of(A) < algo->data[0] || alignment_of(B) < algo->data[1] || alignment_of(C) < algo->data[2] ||
      alignment_of(D) < algo->data[3])
    return invalid("an operand less aligned than the heuristic was promised");
  const bool bias = desc->epilogue == CUBLASLT_EPILOGUE_BIAS;
  // cuBLASLt's heuristic lets this pass, its matmul does not (CUDA 13.0, H200).
  if (!bias && desc->bias) return invalid("a bias pointer without the bias epilogue");
  const cudaDataType_t bias_type = desc->bias_type_set ? desc->bias_type : d->type;
  if (!lt_emu::is_device_span(A, span_bytes(a)) || !lt_emu::is_device_span(B, span_bytes(b)) ||
      !lt_emu::is_device_span(D, span_bytes(d)) ||
      (bias && !lt_emu::is_device_span(desc->bias, p.m * elem_bytes(bias_type))))
    return invalid("an operand outside device memory");  // a GPU would fault reading it
  const float alpha = *static_cast<const float*>(alpha_p), beta = *static_cast<const float*>(beta_p);
  lt_emu::DeviceAccess access;
  const bool round_tf32 = desc->compute == CUBLAS_COMPUTE_32F_FAST_TF32;
  // op(A) as (m, k) and op(B)^T as (n, k), row-major fp32 (TF32-rounded when asked), so each
  // output is one contiguous dot product.
  auto gather = [&](const void* base, const EmuLtMatrixLayout* l, bool trans, uint64_t rows, bool transpose_out) {
    std::vector<float> out(rows * p.k);
    for (uint64_t r = 0; r < rows; ++r)
      for (uint64_t kk = 0; kk < p.k; ++kk) {
        // element (r, kk) of op(A), or element (kk, r) of op(B)
        const uint64_t i = transpose_out ? kk : r, j = transpose_out ? r : kk;
        const float v = trans ? load(base, l->type, j + i * l->ld) : load(base, l->type, i + j * l->ld);
        out[r * p.k + kk] = round_tf32 ? tf32(v) : v;
      }
    return out;
  };
  const std::vector<float> opA = gather(A, a, desc->trans_a == CUBLAS_OP_T, p.m, false);
  const std::vector<float> opBt = gather(B, b, desc->trans_b == CUBLAS_OP_T, p.n, true);
  for (uint64_t j = 0; j < p.n; ++j)
    for (uint64_t i = 0; i < p.m; ++i) {
      const float* x = &opA[i * p.k];
      const float* y = &opBt[j * p.k];
      float s = 0.0f;
      for (uint64_t kk = 0; kk < p.k; ++kk) s += x[kk] * y[kk];
      float out = alpha * s;
      if (beta != 0.0f) out += beta * load(C, c->type, i + j * c->ld);
      if (bias) out += load(desc->bias, bias_type, i);
      store(D, d->type, i + j * d->ld, out);
    }
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasLtGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE: {
      static thread_local std::string text;
      text = "CUBLAS_STATUS_INVALID_VALUE (cuda emulator: " + invalid_detail + ")";
      return text.c_str();
    }
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "unknown cuBLASLt status";
}
