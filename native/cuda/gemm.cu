// GEMM through cuBLASLt: bf16/fp16 operands with fp32 accumulation and an fp32 (or same-type)
// output; fp32 operands in fp32 or, when allowed, TF32. Row-major C = op(A) op(B) is computed as the
// column-major C^T = op(B)^T op(A)^T, so no data is transposed. Plans (descriptors and the
// heuristic's algorithm) are cached per shape.
#include <dlfcn.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <tuple>
#include <type_traits>
#include <vector>

#include "common.cuh"
#include "cublaslt.h"
#include "cuda_ops.h"
#include "library.h"
#include "profile.h"

namespace lt::cuda {

#define LT_STRINGIFY2(x) #x
#define LT_STRINGIFY(x) LT_STRINGIFY2(x)

const CublasLt* cublaslt(std::string* why) {
  static std::once_flag once;
  static CublasLt api;
  static const CublasLt* loaded = nullptr;
  static std::string failure;
  std::call_once(once, [] {
    std::string tried;
    void* lib = open_library("LORA_TRAIN_CUBLASLT", "libcublasLt.so." LT_STRINGIFY(CUBLAS_VER_MAJOR), &tried);
    if (!lib) {
      failure = "cuBLASLt not found (tried " + tried +
                "); install it with `pip install nvidia-cublas` or the CUDA "
                "toolkit and add its lib folder to LD_LIBRARY_PATH, or set LORA_TRAIN_CUBLASLT to the file";
      return;
    }
    std::string missing;
    load_symbol(lib, api.create, "cublasLtCreate", &missing);
    load_symbol(lib, api.matmul, "cublasLtMatmul", &missing);
    load_symbol(lib, api.desc_create, "cublasLtMatmulDescCreate", &missing);
    load_symbol(lib, api.desc_set, "cublasLtMatmulDescSetAttribute", &missing);
    load_symbol(lib, api.layout_create, "cublasLtMatrixLayoutCreate", &missing);
    load_symbol(lib, api.pref_create, "cublasLtMatmulPreferenceCreate", &missing);
    load_symbol(lib, api.pref_set, "cublasLtMatmulPreferenceSetAttribute", &missing);
    load_symbol(lib, api.pref_destroy, "cublasLtMatmulPreferenceDestroy", &missing);
    load_symbol(lib, api.heuristic, "cublasLtMatmulAlgoGetHeuristic", &missing);
    load_symbol(lib, api.status_string, "cublasLtGetStatusString", &missing);
    if (!missing.empty()) {
      failure = "the cuBLASLt library found lacks " + missing + " (an older major version?)";
      return;
    }
    loaded = &api;
  });
  if (why) *why = failure;
  return loaded;
}

namespace {

void check_blas(const CublasLt& lt, cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cuBLASLt: ") + what + ": " + lt.status_string(s));
}

cudaDataType_t cuda_type(DType t) { return t == DType::f32 ? CUDA_R_32F : t == DType::bf16 ? CUDA_R_16BF : CUDA_R_16F; }

// Largest power of two (up to 256, cuBLASLt's default) dividing the address: the heuristic
// must know it.
int alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  int al = 256;
  while (al > 1 && a % al) al /= 2;
  return al;
}

// M, N, K, transA, transB, lda, ldb, ldc, operand type, tf32, alignments of A, B, C and the bias
// (0: none), C's type
using PlanKey =
    std::tuple<int64_t, int64_t, int64_t, bool, bool, int64_t, int64_t, int64_t, int, bool, int, int, int, int, int>;

struct Plan {
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t a, b, c;  // in cuBLASLt's (column-major) roles
  cublasLtMatmulAlgo_t algo;
  bool bias;    // the bias epilogue is on (false when asked but no algorithm has it)
  bool usable;  // the heuristic found an algorithm at all
};

__global__ void fill_rows_kernel(TensorOut C, const float* bias, int64_t M, int64_t N, int64_t ldc) {
  LT_FOR(i, M * N) C.set((i / N) * ldc + (i % N), bias[i % N]);
}

constexpr size_t kWorkspaceBytes = 32u << 20;

class Blas {
 public:
  static Blas& get() {
    static Blas blas;
    return blas;
  }

  // C (M, N) = alpha op(A) op(B) + beta C (+ bias (N) per row, only with beta == 0) with
  // A and B of type t (already matching). False when cuBLASLt has no algorithm for it.
  bool matmul(TensorOut C, const void* A, const void* B, DType t, int64_t M, int64_t N, int64_t K, bool transA,
              bool transB, float alpha, float beta, int64_t lda, int64_t ldb, int64_t ldc, bool tf32,
              const float* bias) {
    std::lock_guard<std::mutex> lock(mutex_);
    const CublasLt& lt = api();
    const PlanKey key{M,
                      N,
                      K,
                      transA,
                      transB,
                      lda,
                      ldb,
                      ldc,
                      static_cast<int>(t),
                      tf32 && t == DType::f32,
                      alignment(A),
                      alignment(B),
                      alignment(C.data),
                      bias ? alignment(bias) : 0,
                      static_cast<int>(C.type)};
    auto it = plans_.find(key);
    if (it == plans_.end()) it = plans_.emplace(key, make_plan(lt, key, t, bias)).first;
    const Plan& p = it->second;
    if (!p.usable) return false;
    if (p.bias) {
      check_blas(lt, lt.desc_set(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)), "bias pointer");
    } else if (bias) {  // no algorithm with the epilogue: start C at the bias and accumulate
      fill_rows_kernel<<<blocks_for(M * N), kThreads>>>(C, bias, M, N, ldc);
      LT_LAUNCHED("gemm bias");
      beta = 1.0f;
    }
    // cuBLASLt's A is our op(B)^T and its B our op(A)^T (see the file comment).
    const cublasStatus_t s = lt.matmul(handle_, p.desc, &alpha, B, p.a, A, p.b, &beta, C.data, p.c, C.data, p.c,
                                       &p.algo, workspace_, kWorkspaceBytes, 0);
    if (s != CUBLAS_STATUS_SUCCESS) check_blas(lt, s, ("matmul of " + describe(key)).c_str());
    return true;
  }

 private:
  const CublasLt& api() {
    if (!handle_) {
      std::string why;
      const CublasLt* lt = cublaslt(&why);
      if (!lt) throw std::runtime_error(why);
      check_blas(*lt, lt->create(&handle_), "create");
      LT_CUDA(cudaMalloc(&workspace_, kWorkspaceBytes));
      lt_ = lt;
    }
    return *lt_;
  }

  static std::string describe(const PlanKey& key) {
    const auto [M, N, K, transA, transB, lda, ldb, ldc, type, tf32, al_a, al_b, al_c, al_bias, c_type] = key;
    std::string d = std::string(dtype_name(static_cast<DType>(type))) + " M=" + std::to_string(M) +
                    " N=" + std::to_string(N) + " K=" + std::to_string(K) + (transA ? " A^T" : "") +
                    (transB ? " B^T" : "") + " lda=" + std::to_string(lda) + " ldb=" + std::to_string(ldb) +
                    " ldc=" + std::to_string(ldc) + " C " + dtype_name(static_cast<DType>(c_type)) + " aligned " +
                    std::to_string(al_a) + "/" + std::to_string(al_b) + "/" + std::to_string(al_c);
    if (al_bias) d += " bias aligned " + std::to_string(al_bias);
    return tf32 ? d + " tf32" : d;
  }

  Plan make_plan(const CublasLt& lt, const PlanKey& key, DType t, const float* bias_pointer) {
    const auto [M, N, K, transA, transB, lda, ldb, ldc, type, tf32, al_a, al_b, al_c, al_bias, c_type] = key;
    Plan p{};
    const cublasComputeType_t compute = tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    check_blas(lt, lt.desc_create(&p.desc, compute, CUDA_R_32F), "descriptor");
    const cublasOperation_t op_b = transB ? CUBLAS_OP_T : CUBLAS_OP_N, op_a = transA ? CUBLAS_OP_T : CUBLAS_OP_N;
    check_blas(lt, lt.desc_set(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_b, sizeof(op_b)), "transa");
    check_blas(lt, lt.desc_set(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_a, sizeof(op_a)), "transb");
    // Stored shapes in column-major terms: our row-major X (r, c) is column-major (c, r).
    check_blas(lt, lt.layout_create(&p.a, cuda_type(t), transB ? K : N, transB ? N : K, ldb), "layout B");
    check_blas(lt, lt.layout_create(&p.b, cuda_type(t), transA ? M : K, transA ? K : M, lda), "layout A");
    check_blas(lt, lt.layout_create(&p.c, cuda_type(static_cast<DType>(c_type)), N, M, ldc), "layout C");
    cublasLtMatmulPreference_t pref;
    check_blas(lt, lt.pref_create(&pref), "preference");
    const uint64_t ws = kWorkspaceBytes;
    const uint32_t aa = al_b, ab = al_a, ac = al_c;
    cublasStatus_t s = lt.pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
    for (auto [attr, value] : {std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa},
                               {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab},
                               {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ac},
                               {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ac}})
      if (s == CUBLAS_STATUS_SUCCESS) s = lt.pref_set(pref, attr, value, sizeof(uint32_t));
    if (s != CUBLAS_STATUS_SUCCESS) lt.pref_destroy(pref);
    check_blas(lt, s, "preference");
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    // With a bias, first with the bias epilogue (cuBLASLt's D is C^T (N, M): its rows are our
    // columns, so the bias (N) adds to every row of C); when that is refused or finds nothing
    // (the heuristic answers NOT_SUPPORTED, as it does for our fp32 bias beside a bf16/fp16 C),
    // again without, and matmul adds the bias itself.
    for (bool epilogue : {al_bias != 0, false}) {
      const cublasLtEpilogue_t e = epilogue ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
      // Our biases are fp32; without the epilogue, back to the default (D's type).
      const cudaDataType_t bias_type = epilogue ? CUDA_R_32F : cuda_type(static_cast<DType>(c_type));
      s = lt.desc_set(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof(e));
      if (s == CUBLAS_STATUS_SUCCESS)
        s = lt.desc_set(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type));
      // No pointer left behind without the epilogue: cuBLASLt's heuristic accepts one, but its
      // matmul then refuses to run (INVALID_VALUE).
      const float* pointer = epilogue ? bias_pointer : nullptr;
      if (s == CUBLAS_STATUS_SUCCESS)
        s = lt.desc_set(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &pointer, sizeof(pointer));
      found = 0;
      if (s == CUBLAS_STATUS_SUCCESS) s = lt.heuristic(handle_, p.desc, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
      p.bias = epilogue;
      if (s == CUBLAS_STATUS_SUCCESS && found > 0) break;
    }
    lt.pref_destroy(pref);
    if (s != CUBLAS_STATUS_SUCCESS && s != CUBLAS_STATUS_NOT_SUPPORTED) check_blas(lt, s, "heuristic");
    p.usable = s == CUBLAS_STATUS_SUCCESS && found > 0;
    if (p.usable) p.algo = result.algo;
    return p;
  }

  std::mutex mutex_;
  cublasLtHandle_t handle_ = nullptr;
  const CublasLt* lt_ = nullptr;
  void* workspace_ = nullptr;
  std::map<PlanKey, Plan> plans_;
};

__global__ void scale_kernel(float* C, int64_t M, int64_t N, int64_t ldc, float beta) {
  LT_FOR(i, M * N) {
    float* c = C + (i / N) * ldc + (i % N);
    *c = beta == 0.0f ? 0.0f : beta * *c;
  }
}

}  // namespace

void gemm_device(TensorOut C, TensorRef A, TensorRef B, int64_t M, int64_t N, int64_t K, bool transA, bool transB,
                 float alpha, float beta, int64_t lda, int64_t ldb, int64_t ldc, bool tf32, const float* bias) {
  if (M <= 0 || N <= 0) return;
  if (bias && beta != 0.0f) throw std::logic_error("gemm_device: a bias needs beta == 0");
  if (bias && (K <= 0 || alpha == 0.0f)) {
    fill_rows_kernel<<<blocks_for(M * N), kThreads>>>(C, bias, M, N, ldc);
    LT_LAUNCHED("gemm bias");
    return;
  }
  if (K <= 0 || alpha == 0.0f) {
    if (beta == 1.0f) return;
    if (C.type != DType::f32) throw std::logic_error("gemm_device: an empty product scaling a bf16/fp16 C");
    scale_kernel<<<blocks_for(M * N), kThreads>>>(C.f32(), M, N, ldc, beta);
    LT_LAUNCHED("gemm (scale)");
    return;
  }
  // A bf16/fp16 C takes operands of its type (cuBLASLt pairs fp32 operands with fp32 C only).
  const DType t = A.type == DType::f32 && B.type == DType::f32 ? C.type : gemm_operand_type(A.type, B.type);
  if (C.type != DType::f32 && C.type != t)
    throw std::invalid_argument(std::string("gemm_device: a ") + dtype_name(C.type) + " C with " + dtype_name(t) +
                                " operands");
  // Elements each stored operand spans.
  const int64_t a_span = transA ? (K - 1) * lda + M : (M - 1) * lda + K;
  const int64_t b_span = transB ? (N - 1) * ldb + K : (K - 1) * ldb + N, c_span = (M - 1) * ldc + N;
  // An fp32 operand beside a bf16/fp16 one is rounded to that type (tensor cores take one type).
  DeviceBuffer a_cast, b_cast;
  A = converted(a_cast, A, t, a_span);
  B = converted(b_cast, B, t, b_span);
  if (Blas::get().matmul(C, A.data, B.data, t, M, N, K, transA, transB, alpha, beta, lda, ldb, ldc, tf32, bias)) return;
  // No algorithm for these low-precision operands (an odd leading dimension, say): widen them
  // (and a low-precision C) and multiply in fp32, which cuBLASLt always has.
  if (t != DType::f32) {
    DeviceBuffer a_wide, b_wide, c_wide;
    const TensorRef a32 = converted(a_wide, A, DType::f32, a_span), b32 = converted(b_wide, B, DType::f32, b_span);
    float* c32 = C.type == DType::f32 ? C.f32() : c_wide.floats(c_span);
    if (c32 != C.data && beta != 0.0f) convert_device(c32, DType::f32, {C.data, C.type}, c_span);
    if (Blas::get().matmul(c32, a32.data, b32.data, DType::f32, M, N, K, transA, transB, alpha, beta, lda, ldb, ldc,
                           false, bias)) {
      if (c32 != C.data) convert_device(C.data, C.type, c32, c_span);
      return;
    }
  }
  throw std::runtime_error("cuBLASLt has no algorithm for a " + std::string(dtype_name(t)) +
                           " GEMM of M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K));
}

void CudaOps::gemm(float* C, TensorRef A, TensorRef B, int64_t M, int64_t N, int64_t K, bool transA, bool transB,
                   float alpha, float beta, int64_t lda, int64_t ldb, int64_t ldc) {
  LT_PROFILE("gemm");
  gemm_device(C, A, B, M, N, K, transA, transB, alpha, beta, lda, ldb, ldc, allow_tf32_);
}

}  // namespace lt::cuda
