// bf16 GEMMs on AVX512_BF16 (Zen 4, Cooper Lake; Sapphire Rapids and later take AMX instead):
// one VDPBF16PS multiplies 16 pairs of bf16 values and adds both products to 16 fp32 sums,
// twice the work of an fp32 FMA of the same width for the same issue slot. The loop is the
// fp32 path's (B blocks packed once per thread, C in register tiles), on operands packed as bf16
// pairs along k.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "gemm.h"
#include "kernels.h"

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
#include <cpuid.h>

#include "bf16_pairs.h"
#define LT_BF16_DOT 1
#endif

namespace lt::cpu {

#ifdef LT_BF16_DOT
namespace {

using bf16_pairs::kPanel;
using bf16_pairs::kTileRows;

constexpr int64_t kKC = 768;  // k per packed block (a multiple of kStep): a B panel of 48 KiB, in L2
constexpr int64_t kMC = 96;   // rows of A per packed block
constexpr int64_t kNC = 4096;

// AVX512_BF16 on a CPU (and OS) that runs the AVX-512 kernel set, whose registers it uses.
bool cpu_has_avx512_bf16() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 1, &a, &b, &c, &d) || !(a & (1u << 5))) return false;
  const std::vector<std::string> sets = supported_kernel_sets();
  return std::find(sets.begin(), sets.end(), "avx512") != sets.end();
}

// Packed operands, per thread, on cache lines: a B row straddling two lines costs the tile
// two loads.
struct Buffers {
  PanelBuffer a, b;
  uint32_t* words_a(int64_t n) { return reinterpret_cast<uint32_t*>(a.reserve(n)); }
  uint16_t* values_b(int64_t n) { return reinterpret_cast<uint16_t*>(b.reserve((n + 1) / 2)); }
};
thread_local Buffers tls;

void pack_b(const GemmArgs& g, int64_t pc, int64_t kc, int64_t jc, int64_t nc) {
  uint16_t* dst = tls.values_b(bf16_pairs::b_panels_size(nc, kc));
  const int64_t at = g.transB ? jc * g.ldb + pc : pc * g.ldb + jc;
  if (g.B.type == DType::f32)
    bf16_pairs::pack_b_panels(dst, g.B.f32() + at, g.ldb, g.transB, nc, kc);
  else
    bf16_pairs::pack_b_panels(dst, g.B.lowp() + at, g.ldb, g.transB, nc, kc);
}

void pack_a(const GemmArgs& g, int64_t ic, int64_t mc, int64_t pc, int64_t kc) {
  uint32_t* dst = tls.words_a(bf16_pairs::a_panels_words(mc, kTileRows, kc));
  const int64_t at = g.transA ? pc * g.lda + ic : ic * g.lda + pc;
  if (g.A.type == DType::f32)
    bf16_pairs::pack_a_panels(dst, g.A.f32() + at, g.lda, !g.transA, mc, kTileRows, kc);
  else
    bf16_pairs::pack_a_panels(dst, g.A.lowp() + at, g.lda, !g.transA, mc, kTileRows, kc);
}

// C's rows [ic, ic + mc) against the packed B block (columns jc.., nc of them; k from pc).
// Reading stored bf16 rows of A in place, as the fp32 path does for narrow outputs, measured
// 5-25% slower than packing them: twelve row streams a tile instead of one.
void multiply_block(const GemmArgs& g, int64_t ic, int64_t mc, int64_t pc, int64_t kc, int64_t jc, int64_t nc,
                    float beta) {
  const int64_t pairs = (kc + 1) / 2, b_panel = bf16_pairs::b_panels_size(kPanel, kc),
                a_panel = bf16_pairs::a_panels_words(kTileRows, kTileRows, kc);
  pack_a(g, ic, mc, pc, kc);
  alignas(64) float edge[kTileRows * kPanel];
  for (int64_t jr = 0; jr < nc; jr += kPanel) {
    const int64_t cols = std::min<int64_t>(kPanel, nc - jr);
    const uint16_t* bpanel = reinterpret_cast<const uint16_t*>(tls.b.data()) + (jr / kPanel) * b_panel;
    for (int64_t ir = 0; ir < mc; ir += kTileRows) {
      const int64_t rows = std::min<int64_t>(kTileRows, mc - ir);
      const uint32_t* apanel = reinterpret_cast<const uint32_t*>(tls.a.data()) + (ir / kTileRows) * a_panel;
      float* c = g.C + (ic + ir) * g.ldc + (jc + jr);
      if (rows == kTileRows && cols == kPanel) {
        bf16_pairs::dot_tile<false>(pairs, apanel, 0, bpanel, c, g.ldc, g.alpha, beta);
      } else {
        bf16_pairs::dot_tile<false>(pairs, apanel, 0, bpanel, edge, kPanel, 1.0f, 0.0f);
        store_edge(g, c, edge, rows, cols, kPanel, beta);
      }
    }
  }
}

}  // namespace

bool have_avx512_bf16() {
  static const bool has = cpu_has_avx512_bf16() && !std::getenv("LORA_TRAIN_NO_AVX512_BF16");
  return has;
}

bool gemm_bf16_dot(const GemmArgs& g) {
  if (!have_avx512_bf16() || gemm_operand_type(g.A.type, g.B.type) != DType::bf16) return false;
  for (int64_t jc = 0; jc < g.N; jc += kNC) {
    const int64_t nc = std::min(kNC, g.N - jc);
    for (int64_t pc = 0; pc < g.K; pc += kKC) {
      const int64_t kc = std::min(kKC, g.K - pc);
      pack_b(g, pc, kc, jc, nc);
      for (int64_t ic = 0; ic < g.M; ic += kMC)
        multiply_block(g, ic, std::min(kMC, g.M - ic), pc, kc, jc, nc, pc == 0 ? g.beta : 1.0f);
    }
  }
  return true;
}

#else

bool have_avx512_bf16() { return false; }
bool gemm_bf16_dot(const GemmArgs&) { return false; }

#endif

}  // namespace lt::cpu
