// bf16 GEMMs on AMX, the matrix units of recent Intel Xeons: one TDPBF16PS multiplies a 16x32
// bf16 tile by a 32x16 one into 16x16 fp32 sums, 16 times the work of an AVX-512 FMA. Operands
// are packed into tiles of bf16 pairs along k (what the instruction reads); products of bf16
// values are summed in fp32, as tensor cores compute them.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "gemm.h"

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__linux__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "bf16_pairs.h"
#define LT_AMX 1
// GCC's AVX-512 intrinsics start from undefined vectors, which it then reports as maybe
// uninitialised; the kernel-set files are built with the same warning off.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace lt::cpu {

#ifdef LT_AMX
namespace {

constexpr int kBlock = 32;                // C block: 2x2 tiles of 16x16
using bf16_pairs::kStep;                  // k per tile multiply
constexpr int kTile = bf16_pairs::kHalf;  // bf16 values in one operand tile (16 rows of 64 bytes)
constexpr int64_t kKC = 1536;             // k per packed block (a multiple of kStep)
constexpr int64_t kPanelBytes = 1 << 20;  // B block kept in L2

bool os_allows_amx() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool tile = d & (1u << 24), bf16 = d & (1u << 22), avx512 = b & (1u << 16) && b & (1u << 30);
  if (!(tile && bf16 && avx512)) return false;
  if (!__get_cpuid_count(7, 1, &a, &b, &c, &d) || !(a & (1u << 5))) return false;  // AVX512_BF16: the packing
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if ((lo & (3u << 17)) != (3u << 17)) return false;  // XTILECFG and XTILEDATA enabled
  // Linux hands out the tile state only on request (once per process).
  constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
}

struct TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Every tile 16 rows of 64 bytes. Loaded per GEMM: the configuration is per thread, and a
// few cycles beside the multiply.
__attribute__((target("amx-tile"))) void configure_tiles() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  // GCC does not see LDTILECFG read the struct and drops the stores above without this.
  __asm__ volatile("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
}

// C32 (32, 32) = A (32 x 32 steps) B (32 steps x 32): A as steps of two 16-row tiles of k-pairs
// (row r, pair q at r * 16 + q), B as steps of two tiles of 16 pair-rows q by 16 columns j.
__attribute__((target("amx-tile,amx-bf16"))) void block_32x32(int64_t steps, const uint16_t* A, const uint16_t* B,
                                                              float* C32) {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t s = 0; s < steps; ++s, A += 2 * kTile, B += 2 * kTile) {
    _tile_loadd(4, A, 64);
    _tile_loadd(5, A + kTile, 64);
    _tile_loadd(6, B, 64);
    _tile_loadd(7, B + kTile, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, C32, kBlock * 4);
  _tile_stored(1, C32 + 16, kBlock * 4);
  _tile_stored(2, C32 + 16 * kBlock, kBlock * 4);
  _tile_stored(3, C32 + 16 * kBlock + 16, kBlock * 4);
}

inline uint32_t bf16_bits(const float* p, int64_t i) { return f32_to_lowp(p[i], DType::bf16); }
inline uint32_t bf16_bits(const uint16_t* p, int64_t i) { return p[i]; }

// One operand tile row: 16 pairs of line `line`, k from k0, zero past kc or past the lines.
// X(line, k) lies at line * ld + k when k_contiguous, else at k * ld + line.
template <typename T>
LT_BF16_TARGET void pack_line(uint16_t* dst, const T* X, int64_t ld, bool k_contiguous, int64_t line, int64_t lines,
                              int64_t k0, int64_t kc) {
  if (k_contiguous) return _mm512_storeu_si512(dst, bf16_pairs::load_line(X, ld, line, lines, k0, kc));
  const int64_t n = line < lines ? std::clamp<int64_t>(kc - k0, 0, kStep) : 0;
  for (int64_t k = 0; k < kStep; ++k) dst[k] = k < n ? static_cast<uint16_t>(bf16_bits(X, (k0 + k) * ld + line)) : 0;
}

// Tiles of op(A) rows [0, rows) (lines: rows, k contiguous unless transA) for k in [0, kc), as
// block_32x32 reads them: per 32-row block, per step, two tiles of 16 rows.
template <typename T>
void pack_a(uint16_t* dst, const T* X, int64_t ld, bool k_contiguous, int64_t rows, int64_t kc) {
  const int64_t steps = (kc + kStep - 1) / kStep;
  for (int64_t r0 = 0; r0 < rows; r0 += kBlock)
    for (int64_t s = 0; s < steps; ++s)
      for (int r = 0; r < kBlock; ++r, dst += kStep) pack_line(dst, X, ld, k_contiguous, r0 + r, rows, s * kStep, kc);
}

thread_local std::vector<uint16_t> tls_a, tls_b;

template <typename T>
void pack_operand_a(std::vector<uint16_t>& buf, const GemmArgs& g, const T* A, int64_t p0, int64_t kc) {
  const int64_t blocks = (g.M + kBlock - 1) / kBlock, steps = (kc + kStep - 1) / kStep;
  buf.resize(blocks * steps * 2 * kTile);
  pack_a(buf.data(), A + (g.transA ? p0 * g.lda : p0), g.lda, !g.transA, g.M, kc);
}

template <typename T>
void pack_operand_b(std::vector<uint16_t>& buf, const GemmArgs& g, const T* B, int64_t p0, int64_t kc, int64_t j0,
                    int64_t nc) {
  const int64_t panels = (nc + kBlock - 1) / kBlock, steps = (kc + kStep - 1) / kStep;
  buf.resize(panels * steps * 2 * kTile);
  const T* at = B + (g.transB ? j0 * g.ldb + p0 : p0 * g.ldb + j0);
  bf16_pairs::pack_b_panels(buf.data(), at, g.ldb, g.transB, nc, kc);
}

void run(const GemmArgs& g) {
  configure_tiles();
  alignas(64) float C32[kBlock * kBlock];
  for (int64_t pc = 0; pc < g.K; pc += kKC) {
    const int64_t kc = std::min(kKC, g.K - pc), steps = (kc + kStep - 1) / kStep;
    const float beta = pc == 0 ? g.beta : 1.0f;
    if (g.A.type == DType::f32)
      pack_operand_a(tls_a, g, g.A.f32(), pc, kc);
    else
      pack_operand_a(tls_a, g, g.A.lowp(), pc, kc);
    const int64_t nc_max = std::max<int64_t>(kBlock, kPanelBytes / (2 * kc) / kBlock * kBlock);
    for (int64_t jc = 0; jc < g.N; jc += nc_max) {
      const int64_t nc = std::min(nc_max, g.N - jc);
      if (g.B.type == DType::f32)
        pack_operand_b(tls_b, g, g.B.f32(), pc, kc, jc, nc);
      else
        pack_operand_b(tls_b, g, g.B.lowp(), pc, kc, jc, nc);
      for (int64_t ic = 0; ic < g.M; ic += kBlock)
        for (int64_t jr = 0; jr < nc; jr += kBlock) {
          const uint16_t* a = tls_a.data() + (ic / kBlock) * steps * 2 * kTile;
          const uint16_t* b = tls_b.data() + (jr / kBlock) * steps * 2 * kTile;
          block_32x32(steps, a, b, C32);
          const int64_t rows = std::min<int64_t>(kBlock, g.M - ic), cols = std::min<int64_t>(kBlock, nc - jr);
          store_edge(g, g.C + ic * g.ldc + jc + jr, C32, rows, cols, kBlock, beta);
        }
    }
  }
}

}  // namespace

bool have_amx() {
  static const bool has = os_allows_amx() && !std::getenv("LORA_TRAIN_NO_AMX");
  return has;
}

bool gemm_amx(const GemmArgs& g) {
  if (!have_amx() || gemm_operand_type(g.A.type, g.B.type) != DType::bf16) return false;
  if (g.M < kBlock || g.N < kBlock || g.K < kStep) return false;  // mostly padding: the vector path
  run(g);
  return true;
}

#else

bool have_amx() { return false; }
bool gemm_amx(const GemmArgs&) { return false; }

#endif

}  // namespace lt::cpu
