#include "gemm.h"

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

#include "cpu_ops.h"
#include "kernels.h"
#include "profile.h"
#include "thread_pool.h"

namespace lt::cpu {
namespace {

// Per-thread packing buffers, kept for the thread's life; rows: A's rows as fp32 operand
// values when the micro-kernel reads A in place but A is not already that.
struct PackBuffers {
  PanelBuffer a, b, rows;
};
thread_local PackBuffers tls_pack;

// Per-thread scratch of widened low-precision values.
thread_local std::vector<float> tls_widened;

// out (rows, n) = rows of src (row stride ld) read as type t, the GEMM's operand type: stored
// bf16 widened, fp32 rounded to bf16 (nearest even, NaN kept quiet) as the GPU's tensor cores
// and PyTorch's autocast see an fp32 operand beside a bf16 one (by the kernel set). fp16, rare
// on the CPU, goes element by element.
template <typename T>
void widen_rows(float* out, const T* src, int64_t ld, int64_t rows, int64_t n, DType t) {
  for (int64_t r = 0; r < rows; ++r, out += n, src += ld) {
    if constexpr (std::is_same_v<T, uint16_t>) {
      load_values(TensorRef(src, t), 0, n, out);  // stored as t: widened
    } else if (t == DType::bf16) {
      active_kernels().through_bf16(out, src, n);
    } else {
      for (int64_t j = 0; j < n; ++j) out[j] = lowp_to_f32(f32_to_lowp(src[j], t), t);
    }
  }
}

// Packs `count` lines of one panel, dst (kc, width), lanes count..width zero. X points at the
// block's first element; line r, step p lies at r * ld + p when k_contiguous (a transposing
// gather), else at p * ld + r (a copy). A low-precision operand is widened first, then moved
// by the same fp32 packers.
template <typename T>
void pack_panel(float* dst, const T* X, int64_t ld, bool k_contiguous, int count, int width, int64_t kc, DType t) {
  const KernelSet& ks = active_kernels();
  const float* block = nullptr;
  if constexpr (std::is_same_v<T, float>) {
    if (t == DType::f32) block = X;
    if (t == DType::bf16 && k_contiguous) return ks.pack_gather_rounded(dst, X, ld, kc, count, width);
  } else {
    if (t == DType::bf16) {  // stored bf16: widened by the packers themselves
      if (k_contiguous) return ks.pack_gather_bf16(dst, X, ld, kc, count, width);
      return ks.pack_copy_bf16(dst, X, ld, kc, count, width);
    }
  }
  if (!block) {
    const int64_t rows = k_contiguous ? count : kc, n = k_contiguous ? kc : count;
    if (tls_widened.size() < static_cast<size_t>(rows * n)) tls_widened.resize(rows * n);
    widen_rows(tls_widened.data(), X, ld, rows, n, t);
    block = tls_widened.data();
    ld = n;
  }
  if (k_contiguous)
    ks.pack_gather(dst, block, ld, kc, count, width);
  else
    ks.pack_copy(dst, block, ld, kc, count, width);
}

template <typename T>
void pack_line_panels(float* dst, const T* X, int64_t ld, bool k_contiguous, int64_t lines, int width, int64_t kc,
                      DType t) {
  if (!k_contiguous) {
    // Copies go a few steps of p at a time across every panel, so that each source row is read
    // front to back (as prefetchers follow) instead of a cache line per row per panel.
    constexpr int64_t kSteps = 8;
    for (int64_t p = 0; p < kc; p += kSteps) {
      const int64_t steps = std::min(kSteps, kc - p);
      float* d = dst + p * width;
      for (int64_t l = 0; l < lines; l += width, d += kc * width) {
        const int count = static_cast<int>(std::min<int64_t>(width, lines - l));
        pack_panel(d, X + p * ld + l, ld, false, count, width, steps, t);
      }
    }
    return;
  }
  for (int64_t l = 0; l < lines; l += width, dst += kc * width) {
    const int count = static_cast<int>(std::min<int64_t>(width, lines - l));
    pack_panel(dst, X + l * ld, ld, true, count, width, kc, t);
  }
}

// Packs op(A)[i0:i0+mc, p0:p0+kc] into ceil(mc/mr) panels of (kc, mr), zero-padding rows.
void pack_a(float* dst, const GemmArgs& g, int64_t i0, int64_t mc, int64_t p0, int64_t kc, int mr) {
  const DType t = gemm_operand_type(g.A.type, g.B.type);
  const int64_t at = g.transA ? p0 * g.lda + i0 : i0 * g.lda + p0;
  if (g.A.type == DType::f32)
    pack_line_panels(dst, g.A.f32() + at, g.lda, !g.transA, mc, mr, kc, t);
  else
    pack_line_panels(dst, g.A.lowp() + at, g.lda, !g.transA, mc, mr, kc, t);
}

// Packs op(B)[p0:p0+kc, j0:j0+nc] into ceil(nc/nr) panels of (kc, nr), zero-padding columns.
void pack_b(float* dst, const GemmArgs& g, int64_t p0, int64_t kc, int64_t j0, int64_t nc, int nr) {
  const DType t = gemm_operand_type(g.A.type, g.B.type);
  const int64_t at = g.transB ? j0 * g.ldb + p0 : p0 * g.ldb + j0;
  if (g.B.type == DType::f32)
    pack_line_panels(dst, g.B.f32() + at, g.ldb, g.transB, nc, nr, kc, t);
  else
    pack_line_panels(dst, g.B.lowp() + at, g.ldb, g.transB, nc, nr, kc, t);
}

void scale_c(const GemmArgs& g) {
  for (int64_t i = 0; i < g.M; ++i) {
    float* row = g.C + i * g.ldc;
    for (int64_t j = 0; j < g.N; ++j) row[j] = g.beta == 0.0f ? 0.0f : g.beta * row[j];
  }
}

// Whether rows lda floats apart all fall into one set of the L1 cache (a multiple of 4 KiB
// apart), where a tile's mr rows read in place evict each other from its 8 ways: K = 1024 fp32
// ran at 134 GFLOP/s against 191 at K = 1040 on Zen 4 (12 rows a tile), until packed instead.
bool rows_share_l1_set(int64_t lda) { return (lda * static_cast<int64_t>(sizeof(float))) % 4096 == 0; }

// The epilogue (bias, SiLU, the bf16 output) as a pass over C, for the paths whose tiles do
// not run it.
void finish(const GemmArgs& g, const KernelSet& ks) {
  if (g.bias || g.silu) ks.bias_silu(g.C, g.ldc, g.M, g.N, g.bias, g.silu);
  if (g.C16)
    for (int64_t i = 0; i < g.M; ++i) ks.to_bf16(g.C16 + i * g.ldc, g.C + i * g.ldc, g.N);
}

}  // namespace

void store_edge(const GemmArgs& g, float* c, const float* edge, int64_t rows, int64_t cols, int64_t ld_edge,
                float beta) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const float v = g.alpha * edge[i * ld_edge + j];
      c[i * g.ldc + j] = beta == 0.0f ? v : v + beta * c[i * g.ldc + j];
    }
}

float* PanelBuffer::reserve(size_t n) {
  if (n > capacity_) {
    const size_t bytes = ((n * sizeof(float) + 63) / 64) * 64;
    data_.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
    if (!data_) throw std::bad_alloc();
    capacity_ = n;
  }
  return data_.get();
}

void gemm_serial(const GemmArgs& g) {
  if (g.M <= 0 || g.N <= 0) return;
  const KernelSet& ks = active_kernels();
  const bool epilogue = g.bias || g.silu || g.C16;
  if (g.K <= 0 || g.alpha == 0.0f) {
    scale_c(g);
    if (epilogue) finish(g, ks);
    return;
  }
#if defined(__x86_64__) || defined(_M_X64)
  // AMX and AVX512_BF16 belong to the AVX-512 set: forcing another set (LORA_TRAIN_CPU_KERNEL)
  // measures it alone.
  if (&ks == &kAvx512Kernels && (gemm_amx(g) || gemm_bf16_dot(g))) {
    if (epilogue) finish(g, ks);
    return;
  }
#endif
  const int mr = ks.mr, nr = ks.nr;
  const int64_t MC = ks.mc, KC = ks.kc, NC = ks.nc;
  float* Ap = tls_pack.a.reserve(MC * KC);
  float* Bp = tls_pack.b.reserve(std::min<int64_t>(NC, ((g.N + nr - 1) / nr) * nr) * KC);
  const DType operand = gemm_operand_type(g.A.type, g.B.type);
  // A's stored rows are the operand's values (fp32 beside fp32): read in place as they are.
  const bool stored_rows = g.A.type == DType::f32 && operand == DType::f32;

  for (int64_t jc = 0; jc < g.N; jc += NC) {
    int64_t nc = std::min(NC, g.N - jc);
    for (int64_t pc = 0; pc < g.K; pc += KC) {
      int64_t kc = std::min(KC, g.K - pc);
      float beta = pc == 0 ? g.beta : 1.0f;
      const bool last = epilogue && pc + kc >= g.K;  // C's tiles are final after this block
      pack_b(Bp, g, pc, kc, jc, nc, nr);
      for (int64_t ic = 0; ic < g.M; ic += MC) {
        int64_t mc = std::min(MC, g.M - ic);
        // Up to 16 column panels reuse a packed A too little to repay packing it (narrow
        // outputs: 1.1x-1.35x faster read in place, measured on AVX2 at 48-256 columns; at 1536
        // the two are even): the tiles then read A's rows in place, or rows of operand values
        // made from them (bf16 widened, fp32 rounded through bf16), which is cheaper than
        // packing too.
        const bool in_place = !g.transA && nc <= 16 * nr && !(stored_rows && rows_share_l1_set(g.lda));
        const float* a_rows = nullptr;  // (mc, kc) rows, stride a_ld, when read in place
        int64_t a_ld = g.lda;
        if (in_place && stored_rows) {
          a_rows = g.A.f32() + ic * g.lda + pc;
        } else if (in_place) {
          float* rows = tls_pack.rows.reserve(MC * KC);
          if (g.A.type == DType::f32)
            widen_rows(rows, g.A.f32() + ic * g.lda + pc, g.lda, mc, kc, operand);
          else
            widen_rows(rows, g.A.lowp() + ic * g.lda + pc, g.lda, mc, kc, operand);
          a_rows = rows;
          a_ld = kc;
        } else {
          pack_a(Ap, g, ic, mc, pc, kc, mr);
        }
        for (int64_t jr = 0; jr < nc; jr += nr) {
          const int cols = static_cast<int>(std::min<int64_t>(nr, nc - jr));
          const float* bpanel = Bp + (jr / nr) * kc * nr;
          // The epilogue once C's tiles are final, while each is in registers (a bf16 output
          // then written only there).
          const float* bias = last && g.bias ? g.bias + jc + jr : nullptr;
          for (int64_t ir = 0; ir < mc; ir += mr) {
            const int64_t at = (ic + ir) * g.ldc + (jc + jr);
            const TileOut out{g.C + at, g.ldc,          static_cast<int>(std::min<int64_t>(mr, mc - ir)),
                              cols,     g.alpha,        beta,
                              bias,     last && g.silu, last && g.C16 ? g.C16 + at : nullptr};
            if (in_place)
              ks.gemm_tile_rows(kc, a_rows + ir * a_ld, a_ld, bpanel, out);
            else
              ks.gemm_tile(kc, Ap + (ir / mr) * kc * mr, bpanel, out);
          }
        }
      }
    }
  }
}

void gemm(const GemmArgs& g) {
  gemm_operand_type(g.A.type, g.B.type);  // refuse mismatched types here, not on a pool thread
  profile_count_flops(2.0 * g.M * g.N * g.K);
  const int threads = num_threads();
  const KernelSet& ks = active_kernels();
  // Split C into a grid of independent sub-GEMMs, one per thread, cut in whole register
  // tiles; each thread packs its own panels, so cutting M packs all of B on every thread and
  // cutting N all of A. Cut the longer dimension first: the copies are then of the shorter
  // operand (at batch 1 a Linear's rows are fewer than its weight's, which stays unrepeated).
  int64_t mtiles = (g.M + ks.mr - 1) / ks.mr, ntiles = (g.N + ks.nr - 1) / ks.nr;
  double flops = 2.0 * g.M * g.N * g.K;
  if (threads == 1 || flops < 2e6 || mtiles * ntiles < 2) return gemm_serial(g);
  int tm = 1, tn = 1;
  for (int t = threads; t > 1;) {  // factor threads greedily into the longer dimension
    int f = 2;
    while (t % f) ++f;
    if (g.M / tm >= g.N / tn)
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
    sub.A = g.A.from(g.transA ? m0 : m0 * g.lda);
    sub.B = g.B.from(g.transB ? n0 * g.ldb : n0);
    if (g.bias) sub.bias = g.bias + n0;
    if (g.C16) sub.C16 = g.C16 + m0 * g.ldc + n0;
    gemm_serial(sub);
  });
}

void CpuOps::gemm(float* C, TensorRef A, TensorRef B, int64_t M, int64_t N, int64_t K, bool transA, bool transB,
                  float alpha, float beta, int64_t lda, int64_t ldb, int64_t ldc) {
  LT_CPU_PROFILE("gemm", {M, N, K});
  cpu::gemm({C, A, B, M, N, K, transA, transB, alpha, beta, lda, ldb, ldc});
}

}  // namespace lt::cpu
