#include "gemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>

#include "cpu_ops.h"
#include "kernels.h"
#include "thread_pool.h"

namespace lt::cpu {
namespace {

struct AlignedFree {
  void operator()(float* p) const { std::free(p); }
};

// Per-thread packing buffers, grown on demand and kept for the thread's life.
struct PackBuffers {
  std::unique_ptr<float, AlignedFree> a, b;
  size_t a_cap = 0, b_cap = 0;
  static float* reserve(std::unique_ptr<float, AlignedFree>& buf, size_t& cap, size_t n) {
    if (n > cap) {
      size_t bytes = ((n * sizeof(float) + 63) / 64) * 64;
      float* p = static_cast<float*>(std::aligned_alloc(64, bytes));
      if (!p) throw std::bad_alloc();
      buf.reset(p);
      cap = n;
    }
    return buf.get();
  }
};
thread_local PackBuffers tls_pack;

// Element i of a stored operand as fp32. t is the GEMM's operand type (gemm_operand_type): an
// fp32 operand beside a bf16/fp16 one is rounded to that type first, as the GPU's tensor cores
// (and PyTorch's autocast) see it.
template <typename T>
inline float widen(const T* p, int64_t i, DType t);
template <>
inline float widen<float>(const float* p, int64_t i, DType t) {
  return t == DType::f32 ? p[i] : lowp_to_f32(f32_to_lowp(p[i], t), t);
}
template <>
inline float widen<uint16_t>(const uint16_t* p, int64_t i, DType t) {
  return lowp_to_f32(p[i], t);
}

// Packs op(A)[i0:i0+mc, p0:p0+kc] into ceil(mc/mr) panels of (kc, mr), zero-padding rows.
template <typename T>
void pack_a(float* dst, const T* A, DType t, const GemmArgs& g, int64_t i0, int64_t mc, int64_t p0, int64_t kc,
            int mr) {
  for (int64_t ip = 0; ip < mc; ip += mr, dst += kc * mr) {
    int64_t rows = std::min<int64_t>(mr, mc - ip);
    if (g.transA) {  // op(A)(i, p) = A[p, i]: rows of the panel are contiguous in A
      const T* src = A + (p0)*g.lda + (i0 + ip);
      for (int64_t p = 0; p < kc; ++p, src += g.lda) {
        float* d = dst + p * mr;
        if (std::is_same_v<T, float> && t == DType::f32)
          std::memcpy(d, src, rows * sizeof(float));
        else
          for (int64_t i = 0; i < rows; ++i) d[i] = widen(src, i, t);
        for (int64_t i = rows; i < mr; ++i) d[i] = 0.0f;
      }
    } else {
      // Row-major A: walk k outermost so the panel is written contiguously, reading one element
      // from each of the mr rows per step (mr sequential streams the prefetcher follows).
      const T* rows_at[32];
      for (int64_t i = 0; i < rows; ++i) rows_at[i] = A + (i0 + ip + i) * g.lda + p0;
      for (int64_t p = 0; p < kc; ++p) {
        float* d = dst + p * mr;
        for (int64_t i = 0; i < rows; ++i) d[i] = widen(rows_at[i], p, t);
        for (int64_t i = rows; i < mr; ++i) d[i] = 0.0f;
      }
    }
  }
}

// Packs op(B)[p0:p0+kc, j0:j0+nc] into ceil(nc/nr) panels of (kc, nr), zero-padding columns.
template <typename T>
void pack_b(float* dst, const T* B, DType t, const GemmArgs& g, int64_t p0, int64_t kc, int64_t j0, int64_t nc,
            int nr) {
  for (int64_t jp = 0; jp < nc; jp += nr, dst += kc * nr) {
    int64_t cols = std::min<int64_t>(nr, nc - jp);
    if (!g.transB) {  // op(B)(p, j) = B[p, j]: panel rows contiguous
      const T* src = B + p0 * g.ldb + (j0 + jp);
      for (int64_t p = 0; p < kc; ++p, src += g.ldb) {
        float* d = dst + p * nr;
        if (std::is_same_v<T, float> && t == DType::f32)
          std::memcpy(d, src, cols * sizeof(float));
        else
          for (int64_t j = 0; j < cols; ++j) d[j] = widen(src, j, t);
        for (int64_t j = cols; j < nr; ++j) d[j] = 0.0f;
      }
    } else {
      for (int64_t j = 0; j < cols; ++j) {
        const T* src = B + (j0 + jp + j) * g.ldb + p0;
        for (int64_t p = 0; p < kc; ++p) dst[p * nr + j] = widen(src, p, t);
      }
      for (int64_t j = cols; j < nr; ++j)
        for (int64_t p = 0; p < kc; ++p) dst[p * nr + j] = 0.0f;
    }
  }
}

void pack_a(float* dst, const GemmArgs& g, int64_t i0, int64_t mc, int64_t p0, int64_t kc, int mr) {
  const DType t = gemm_operand_type(g.A.type, g.B.type);
  if (t == DType::f32) {
    const KernelSet& ks = active_kernels();
    const float* A = g.A.f32();
    for (int64_t ip = 0; ip < mc; ip += mr, dst += kc * mr) {
      const int rows = static_cast<int>(std::min<int64_t>(mr, mc - ip));
      if (g.transA)
        ks.pack_copy(dst, A + p0 * g.lda + i0 + ip, g.lda, kc, rows, mr);
      else
        ks.pack_gather(dst, A + (i0 + ip) * g.lda + p0, g.lda, kc, rows, mr);
    }
    return;
  }
  if (g.A.type == DType::f32)
    pack_a(dst, g.A.f32(), t, g, i0, mc, p0, kc, mr);
  else
    pack_a(dst, g.A.lowp(), t, g, i0, mc, p0, kc, mr);
}

void pack_b(float* dst, const GemmArgs& g, int64_t p0, int64_t kc, int64_t j0, int64_t nc, int nr) {
  const DType t = gemm_operand_type(g.A.type, g.B.type);
  if (t == DType::f32) {
    const KernelSet& ks = active_kernels();
    const float* B = g.B.f32();
    for (int64_t jp = 0; jp < nc; jp += nr, dst += kc * nr) {
      const int cols = static_cast<int>(std::min<int64_t>(nr, nc - jp));
      if (g.transB)
        ks.pack_gather(dst, B + (j0 + jp) * g.ldb + p0, g.ldb, kc, cols, nr);
      else
        ks.pack_copy(dst, B + p0 * g.ldb + j0 + jp, g.ldb, kc, cols, nr);
    }
    return;
  }
  if (g.B.type == DType::f32)
    pack_b(dst, g.B.f32(), t, g, p0, kc, j0, nc, nr);
  else
    pack_b(dst, g.B.lowp(), t, g, p0, kc, j0, nc, nr);
}

// A stored operand advanced by n elements.
TensorRef offset(TensorRef x, int64_t n) { return {static_cast<const char*>(x.data) + n * dtype_size(x.type), x.type}; }

void scale_c(const GemmArgs& g) {
  for (int64_t i = 0; i < g.M; ++i) {
    float* row = g.C + i * g.ldc;
    for (int64_t j = 0; j < g.N; ++j) row[j] = g.beta == 0.0f ? 0.0f : g.beta * row[j];
  }
}

}  // namespace

void gemm_serial(const GemmArgs& g) {
  if (g.M <= 0 || g.N <= 0) return;
  if (g.K <= 0 || g.alpha == 0.0f) return scale_c(g);
  const KernelSet& ks = active_kernels();
  const int mr = ks.mr, nr = ks.nr;
  const int64_t MC = ks.mc, KC = ks.kc, NC = ks.nc;
  float* Ap = PackBuffers::reserve(tls_pack.a, tls_pack.a_cap, MC * KC);
  float* Bp = PackBuffers::reserve(tls_pack.b, tls_pack.b_cap, std::min<int64_t>(NC, ((g.N + nr - 1) / nr) * nr) * KC);
  alignas(64) float edge[32 * 32];  // one partial tile; every kernel set has mr, nr <= 32

  for (int64_t jc = 0; jc < g.N; jc += NC) {
    int64_t nc = std::min(NC, g.N - jc);
    for (int64_t pc = 0; pc < g.K; pc += KC) {
      int64_t kc = std::min(KC, g.K - pc);
      float beta = pc == 0 ? g.beta : 1.0f;
      pack_b(Bp, g, pc, kc, jc, nc, nr);
      for (int64_t ic = 0; ic < g.M; ic += MC) {
        int64_t mc = std::min(MC, g.M - ic);
        pack_a(Ap, g, ic, mc, pc, kc, mr);
        for (int64_t jr = 0; jr < nc; jr += nr) {
          int64_t cols = std::min<int64_t>(nr, nc - jr);
          const float* bpanel = Bp + (jr / nr) * kc * nr;
          for (int64_t ir = 0; ir < mc; ir += mr) {
            int64_t rows = std::min<int64_t>(mr, mc - ir);
            const float* apanel = Ap + (ir / mr) * kc * mr;
            float* c = g.C + (ic + ir) * g.ldc + (jc + jr);
            if (rows == mr && cols == nr) {
              ks.gemm_tile(kc, apanel, bpanel, c, g.ldc, g.alpha, beta);
            } else {
              ks.gemm_tile(kc, apanel, bpanel, edge, nr, 1.0f, 0.0f);
              for (int64_t i = 0; i < rows; ++i)
                for (int64_t j = 0; j < cols; ++j) {
                  float v = g.alpha * edge[i * nr + j];
                  c[i * g.ldc + j] = beta == 0.0f ? v : v + beta * c[i * g.ldc + j];
                }
            }
          }
        }
      }
    }
  }
}

void gemm(const GemmArgs& g) {
  gemm_operand_type(g.A.type, g.B.type);  // refuse mismatched types here, not on a pool thread
  const int threads = num_threads();
  const KernelSet& ks = active_kernels();
  // Split C into a grid of independent sub-GEMMs, one per thread, cut in whole register
  // tiles; each thread packs its own panels. Cut the dimension with more tiles first.
  int64_t mtiles = (g.M + ks.mr - 1) / ks.mr, ntiles = (g.N + ks.nr - 1) / ks.nr;
  double flops = 2.0 * g.M * g.N * g.K;
  if (threads == 1 || flops < 2e6 || mtiles * ntiles < 2) return gemm_serial(g);
  int tm = 1, tn = 1;
  for (int t = threads; t > 1;) {  // factor threads greedily into the larger tile count
    int f = 2;
    while (t % f) ++f;
    if (mtiles / tm >= ntiles / tn)
      tm *= f;
    else
      tn *= f;
    t /= f;
  }
  tm = static_cast<int>(std::min<int64_t>(tm, mtiles));
  tn = static_cast<int>(std::min<int64_t>(tn, ntiles));
  parallel_for(static_cast<int64_t>(tm) * tn, [&](int64_t t) {
    int64_t bi = t / tn, bj = t % tn;
    int64_t m0 = (mtiles * bi / tm) * ks.mr, m1 = std::min(g.M, (mtiles * (bi + 1) / tm) * ks.mr);
    int64_t n0 = (ntiles * bj / tn) * ks.nr, n1 = std::min(g.N, (ntiles * (bj + 1) / tn) * ks.nr);
    if (m0 >= m1 || n0 >= n1) return;
    GemmArgs sub = g;
    sub.M = m1 - m0;
    sub.N = n1 - n0;
    sub.C = g.C + m0 * g.ldc + n0;
    sub.A = offset(g.A, g.transA ? m0 : m0 * g.lda);
    sub.B = offset(g.B, g.transB ? n0 * g.ldb : n0);
    gemm_serial(sub);
  });
}

void CpuOps::gemm(float* C, TensorRef A, TensorRef B, int64_t M, int64_t N, int64_t K, bool transA, bool transB,
                  float alpha, float beta, int64_t lda, int64_t ldb, int64_t ldc) {
  cpu::gemm({C, A, B, M, N, K, transA, transB, alpha, beta, lda, ldb, ldc});
}

}  // namespace lt::cpu
