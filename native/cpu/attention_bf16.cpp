// Attention computed in bf16 (mixed precision) on AVX512_BF16: q, k, v stored bf16 or fp32 and
// rounded as packed, every product on VDPBF16PS pair dot products summed in fp32, as the GEMMs
// beside it. The blocking, online softmax and scatter are attention.cpp's; what changes is the operands' layout (bf16
// pairs along the summed dimension) and that the fp32 tiles a product reads (probabilities,
// their gradient, dout) are rounded to bf16 first, as tensor-core flash attention rounds them.
// The score shifts (lse, delta) stay in fp32, applied after the product: as a bf16 step of the
// operands they would be rounded too.
#include <cmath>
#include <limits>
#include <vector>

#include "attention_parts.h"
#include "thread_pool.h"

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
#include "bf16_pairs.h"
#define LT_BF16_ATTENTION 1
#endif

namespace lt::cpu {

#ifdef LT_BF16_ATTENTION
namespace {

using bf16_pairs::a_panels_words;
using bf16_pairs::b_panels_size;
using bf16_pairs::dot_tile;
using bf16_pairs::kPanel;
using bf16_pairs::kStep;
using bf16_pairs::kTileRows;

static_assert(kBr % kTileRows == 0 && kBc % kPanel == 0 && kBc % kStep == 0 && kBr % 2 == 0,
              "blocks of whole tiles, panels, steps and pairs");

// A pair-packed operand (A panels of kTileRows lines, B panels of kPanel lines, each summing
// over kc values), seen from line `line0` and summed value `first0` on: a whole tile or panel
// of lines, a whole pair (A) or step (B) of values.
struct PackedA {
  const uint32_t* data;
  int64_t kc, line0 = 0, first0 = 0;
  PackedA at(int64_t line, int64_t first) const { return {data, kc, line0 + line, first0 + first}; }
  const uint32_t* panel(int64_t line) const {
    return data + (line0 + line) / kTileRows * a_panels_words(kTileRows, kTileRows, kc) + first0 / 2 * kTileRows;
  }
};
struct PackedB {
  const uint16_t* data;
  int64_t kc, line0 = 0, first0 = 0;
  PackedB at(int64_t line, int64_t first) const { return {data, kc, line0 + line, first0 + first}; }
  const uint16_t* panel(int64_t line) const {
    return data + (line0 + line) / kPanel * b_panels_size(kPanel, kc) + b_panels_size(kPanel, first0);
  }
};

// Scratch sizes, in 32-bit words: a B operand's packed values, a bf16 tile's.
int64_t b_words(int64_t lines, int64_t kc) { return (b_panels_size(lines, kc) + 1) / 2; }
constexpr int64_t kTileWords = kBr * kBc / 2;

uint32_t* take_words(TaskScratch& ws, int64_t n) { return reinterpret_cast<uint32_t*>(ws.take(n)); }
uint16_t* take_values(TaskScratch& ws, int64_t words) { return reinterpret_cast<uint16_t*>(ws.take(words)); }

// Lines [0, lines) of x (line l at l * ld, k contiguous) or, k_major, of x^T (line l, value k
// at k * ld + l), kc values each, into scratch (pieces start on cache lines, which B panels'
// 64-byte pair rows want).
template <typename T>
PackedA pack_a(TaskScratch& ws, const T* x, int64_t ld, bool k_major, int64_t lines, int64_t kc) {
  uint32_t* dst = take_words(ws, a_panels_words(lines, kTileRows, kc));
  bf16_pairs::pack_a_panels(dst, x, ld, !k_major, lines, kTileRows, kc);
  return {dst, kc};
}
template <typename T>
PackedB pack_b(TaskScratch& ws, const T* x, int64_t ld, bool k_major, int64_t lines, int64_t kc) {
  uint16_t* dst = take_values(ws, b_words(lines, kc));
  bf16_pairs::pack_b_panels(dst, x, ld, !k_major, lines, kc);
  return {dst, kc};
}

// A head's operand, stored bf16 or (dout) fp32.
template <typename F>
auto with_rows(HeadRows x, F f) {
  return x.rows.type == DType::bf16 ? f(x.rows.lowp()) : f(x.rows.f32());
}

// c (rows, cols: whole tiles and panels) = alpha a b + beta c over kc values, row stride ldc.
void product(float* c, int64_t ldc, PackedA a, PackedB b, int64_t rows, int64_t cols, int64_t kc, float alpha,
             float beta) {
  for (int64_t j = 0; j < cols; j += kPanel)
    for (int64_t i = 0; i < rows; i += kTileRows)
      dot_tile<false>((kc + 1) / 2, a.panel(i), 0, b.panel(j), c + i * ldc + j, ldc, alpha, beta);
}

// The same with a's rows read in place from bf16 rows (row stride lda values).
void product_rows(float* c, int64_t ldc, const uint16_t* a, int64_t lda, PackedB b, int64_t rows, int64_t cols,
                  int64_t kc, float alpha, float beta) {
  for (int64_t j = 0; j < cols; j += kPanel)
    for (int64_t i = 0; i < rows; i += kTileRows)
      dot_tile<true>((kc + 1) / 2, a + i * lda, lda, b.panel(j), c + i * ldc + j, ldc, alpha, beta);
}

// rows of x (row stride kBc) as bf16 rows, the first `cols` values rounded and the rest of each
// pair zero.
void round_rows(uint16_t* out, const float* x, int64_t rows, int64_t cols) {
  const KernelSet& ks = active_kernels();
  for (int64_t r = 0; r < rows; ++r) {
    ks.to_bf16(out + r * kBc, x + r * kBc, cols);
    if (cols % 2) out[r * kBc + cols] = 0;
  }
}

void forward_head(TensorOut o, float* lse, HeadRows qh, HeadRows kh, HeadRows vh, int64_t o_first, int64_t N, int64_t M,
                  int64_t d, int64_t ld, float scale) {
  const KernelSet& ks = active_kernels();
  const int64_t dp = round_up(d, kPanel);  // accumulator columns: whole panels
  TaskScratch& ws = tls_scratch;
  ws.reset({a_panels_words(N, kTileRows, d), b_words(M, d), b_words(d, M), kTileWords, kBr * kBc, kBr * dp});
  const PackedA q_a = with_rows(qh, [&](auto x) { return pack_a(ws, x, qh.ld, false, N, d); });  // Q (N, d)
  const PackedB k_b = with_rows(kh, [&](auto x) { return pack_b(ws, x, kh.ld, false, M, d); });  // K^T (d, M)
  const PackedB v_b = with_rows(vh, [&](auto x) { return pack_b(ws, x, vh.ld, true, d, M); });   // V (M, d)
  uint16_t* p16 = take_values(ws, kTileWords);                                                   // (kBr, kBc) bf16
  float* s = ws.take(kBr * kBc);                                                                 // (kBr, kBc)
  float* acc = ws.take(kBr * dp);                                                                // (kBr, dp)
  SoftmaxRows stats;
  for (int64_t i0 = 0; i0 < N; i0 += kBr) {
    const int64_t br = std::min(kBr, N - i0), rows = round_up(br, kTileRows);
    stats.start(acc, kBr * dp);
    for (int64_t j0 = 0; j0 < M; j0 += kBc) {
      const int64_t bc = std::min(kBc, M - j0);
      // s = scale q_i k_j^T   (br, bc)
      product(s, kBc, q_a.at(i0, 0), k_b.at(j0, 0), rows, bc, d, scale, 0.0f);
      online_softmax(ks, s, acc, dp, stats, br, bc, i0, j0, nullptr, false);
      // acc += p v_j   (br, d)
      round_rows(p16, s, rows, bc);
      product_rows(acc, dp, p16, kBc, v_b.at(0, j0), rows, d, bc, 1.0f, 1.0f);
    }
    finish_rows(o, o_first + i0 * ld, ld, lse ? lse + i0 : nullptr, acc, dp, stats, br, d);
  }
}

// p (rows, cols) = exp(p - shift_r) on the first br rows and bc columns: the probabilities of
// scores whose row's log-sum-exp is shift_r; the padding stays 0.
void exp_rows(float* p, const float* lse, int64_t br, int64_t bc) {
  const KernelSet& ks = active_kernels();
  for (int64_t r = 0; r < br; ++r) ks.exp_shift_sum(p + r * kBc, bc, lse[r]);
}

// ds = p * (ds - delta_r) over (rows, cols), the padding of p being 0.
void softmax_grad(float* ds, const float* p, const float* delta, int64_t br, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    const float shift = r < br ? delta[r] : 0.0f;
    for (int64_t c = 0; c < cols; ++c) ds[r * kBc + c] = p[r * kBc + c] * (ds[r * kBc + c] - shift);
  }
}

struct HeadGrads {
  float *dq, *dk, *dv;  // the head's first elements in (N or M, H*d) tensors, row stride ld
};

void backward_head(HeadGrads g, HeadRows qh, HeadRows kh, HeadRows vh, HeadRows doh, const float* delta,
                   const float* lse, int64_t N, int64_t M, int64_t d, int64_t ld, float scale) {
  const KernelSet& ks = active_kernels();
  // Accumulators padded to whole tiles: dq (q_rows, dp); dk, dv transposed, (d_rows, keys).
  const int64_t dp = round_up(d, kPanel), q_rows = round_up(N, kTileRows), d_rows = round_up(d, kTileRows),
                keys = round_up(M, kPanel);
  const int64_t by_rows = a_panels_words(N, kTileRows, d), by_d = a_panels_words(d, kTileRows, N),
                block = b_words(kBc, kBr);
  TaskScratch& ws = tls_scratch;
  ws.reset({by_rows, b_words(M, d), by_rows, b_words(M, d), by_d, by_d, b_words(d, M), block, block, kTileWords,
            kBr * kBc, kBr * kBc, q_rows * dp, d_rows * keys, d_rows * keys, kTransposeKeys * d});
  const PackedA q_a = with_rows(qh, [&](auto x) { return pack_a(ws, x, qh.ld, false, N, d); });     // Q (N, d)
  const PackedB k_b = with_rows(kh, [&](auto x) { return pack_b(ws, x, kh.ld, false, M, d); });     // K^T (d, M)
  const PackedA do_a = with_rows(doh, [&](auto x) { return pack_a(ws, x, doh.ld, false, N, d); });  // dout (N, d)
  const PackedB v_b = with_rows(vh, [&](auto x) { return pack_b(ws, x, vh.ld, false, M, d); });     // V^T (d, M)
  const PackedA do_t = with_rows(doh, [&](auto x) { return pack_a(ws, x, doh.ld, true, d, N); });   // dout^T (d, N)
  const PackedA q_t = with_rows(qh, [&](auto x) { return pack_a(ws, x, qh.ld, true, d, N); });      // Q^T (d, N)
  const PackedB k_c = with_rows(kh, [&](auto x) { return pack_b(ws, x, kh.ld, true, d, M); });      // K (M, d)
  uint16_t* p_b = take_values(ws, block);           // P (br, bc) as B panels
  uint16_t* ds_b = take_values(ws, block);          // dS (br, bc) as B panels
  uint16_t* ds16 = take_values(ws, kTileWords);     // (kBr, kBc) bf16
  float* p = ws.take(kBr * kBc);                    // (kBr, kBc)
  float* ds = ws.take(kBr * kBc);                   // (kBr, kBc)
  float* dqh = ws.take(q_rows * dp);                // (q_rows, dp)
  float* dk_t = ws.take(d_rows * keys);             // (d_rows, keys)
  float* dv_t = ws.take(d_rows * keys);             // (d_rows, keys)
  float* transposed = ws.take(kTransposeKeys * d);  // (kTransposeKeys, d)
  std::fill(dqh, dqh + q_rows * dp, 0.0f);
  std::fill(dk_t, dk_t + d_rows * keys, 0.0f);
  std::fill(dv_t, dv_t + d_rows * keys, 0.0f);
  for (int64_t j0 = 0; j0 < M; j0 += kBc) {
    const int64_t bc = std::min(kBc, M - j0), cols = round_up(bc, kPanel);
    for (int64_t i0 = 0; i0 < N; i0 += kBr) {
      const int64_t br = std::min(kBr, N - i0), rows = round_up(br, kTileRows);
      // p = exp(scale q_i k_j^T - lse_i)   (br, bc)
      product(p, kBc, q_a.at(i0, 0), k_b.at(j0, 0), rows, bc, d, scale, 0.0f);
      exp_rows(p, lse + i0, br, bc);
      // dv_j^T += dout_i^T p   (d, bc)
      bf16_pairs::pack_b_panels(p_b, p, kBc, false, bc, br);
      product(dv_t + j0, keys, do_t.at(0, i0), {p_b, br}, d_rows, bc, br, 1.0f, 1.0f);
      // ds = p * (dout_i v_j^T - delta_i)   (br, bc)
      product(ds, kBc, do_a.at(i0, 0), v_b.at(j0, 0), rows, bc, d, 1.0f, 0.0f);
      softmax_grad(ds, p, delta + i0, br, rows, cols);
      // dk_j^T += scale q_i^T ds   (d, bc)
      bf16_pairs::pack_b_panels(ds_b, ds, kBc, false, bc, br);
      product(dk_t + j0, keys, q_t.at(0, i0), {ds_b, br}, d_rows, bc, br, scale, 1.0f);
      // dq_i += scale ds k_j   (br, d)
      round_rows(ds16, ds, rows, bc);
      product_rows(dqh + i0 * dp, dp, ds16, kBc, k_c.at(0, j0), rows, d, bc, scale, 1.0f);
    }
  }
  scatter_add_head(g.dq, dqh, N, d, ld, dp);
  scatter_add_head_transposed(ks, g.dk, dk_t, M, d, ld, keys, transposed);
  scatter_add_head_transposed(ks, g.dv, dv_t, M, d, ld, keys, transposed);
}

}  // namespace

bool attention_bf16_applies(DType compute, TensorRef q, TensorRef k, TensorRef v) {
  const auto packable = [](TensorRef x) { return x.type == DType::f32 || x.type == DType::bf16; };
  return compute == DType::bf16 && packable(q) && packable(k) && packable(v) && have_avx512_bf16() &&
         &active_kernels() == &kAvx512Kernels;
}

void attention_forward_bf16(TensorOut o, float* lse, TensorRef q, TensorRef k, TensorRef v, int64_t B, int64_t N,
                            int64_t M, int64_t H, int64_t d, float scale) {
  const int64_t ld = H * d;
  parallel_for(B * H, [&](int64_t task) {
    const int64_t b = task / H, h = task % H;
    auto at = [&](int64_t rows) { return b * rows * ld + h * d; };  // a head's first element
    forward_head(o, lse ? lse + task * N : nullptr, {q.from(at(N)), ld}, {k.from(at(M)), ld}, {v.from(at(M)), ld},
                 at(N), N, M, d, ld, scale);
  });
}

void attention_backward_bf16(float* dq, float* dk, float* dv, const float* dout, TensorRef q, TensorRef k, TensorRef v,
                             TensorRef o, const float* lse, int64_t B, int64_t N, int64_t M, int64_t H, int64_t d,
                             float scale) {
  const int64_t ld = H * d;
  parallel_for(B * H, [&](int64_t task) {
    const int64_t b = task / H, h = task % H;
    auto at = [&](int64_t rows) { return b * rows * ld + h * d; };  // a head's first element
    const HeadRows doh{dout + at(N), ld}, oh{o.from(at(N)), ld};
    const std::vector<float> delta = row_deltas(doh, oh, N, d, true);  // (N)
    backward_head({dq + at(N), dk + at(M), dv + at(M)}, {q.from(at(N)), ld}, {k.from(at(M)), ld}, {v.from(at(M)), ld},
                  doh, delta.data(), lse + task * N, N, M, d, ld, scale);
  });
}

#else

bool attention_bf16_applies(DType, TensorRef, TensorRef, TensorRef) { return false; }
void attention_forward_bf16(TensorOut, float*, TensorRef, TensorRef, TensorRef, int64_t, int64_t, int64_t, int64_t,
                            int64_t, float) {}
void attention_backward_bf16(float*, float*, float*, const float*, TensorRef, TensorRef, TensorRef, TensorRef,
                             const float*, int64_t, int64_t, int64_t, int64_t, int64_t, float) {}

#endif

}  // namespace lt::cpu
