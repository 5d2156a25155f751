// Fused multi-head attention (flash-attention style) on the CPU. Each (batch, head) is one
// task; inside it, query blocks of kBr rows meet key blocks of kBc rows, so the scores held
// at any time are one (kBr, kBc) tile. The forward keeps an online softmax (running max and
// sum) and stores the log-sum-exp; the backward recomputes each probability tile from it.
//
// A head's q, k, v (and dout) are packed once into the panels the GEMM micro-kernel reads, in
// every orientation a product needs, so that a tile pair costs micro-kernel calls and little
// else. The forward's probability tile is row-major, the A operand of P V read in place. The
// backward keeps its (kBr, kBc) tiles as panels of nr keys, which the micro-kernel writes
// directly and which are at once the B operand of the products summing over queries (dv, dk,
// computed transposed) and, read in place a panel at a time, the A operand of dq's product,
// whose rows they are. Its score products come out already shifted by lse and delta, carried
// as one more step of the packed operands. Calling the general GEMM per tile instead re-packed
// a key block for every query block: with a head dim of 64, packing took as long as the
// arithmetic.
#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>
#include <stdexcept>
#include <vector>

#include "attention_parts.h"
#include "cpu_ops.h"
#include "gemm.h"
#include "kernels.h"
#include "profile.h"
#include "thread_pool.h"

namespace lt::cpu {
namespace {

// x (rows, d) as panels of `width` rows stepping along d: (ceil(rows/width), d, width), the
// layout of an operand whose rows are the product's rows (A) or columns (B, transposed).
int64_t rows_size(int64_t rows, int64_t d, int width) { return round_up(rows, width) * d; }

// Rows [r, r + count) of x as one panel (d, width), by the packer for x's storage type.
void gather_panel(const KernelSet& ks, float* dst, HeadRows x, int64_t r, int64_t d, int count, int width) {
  if (x.rows.type == DType::bf16)
    ks.pack_gather_bf16(dst, x.rows.lowp() + r * x.ld, x.ld, d, count, width);
  else
    ks.pack_gather(dst, x.rows.f32() + r * x.ld, x.ld, d, count, width);
}

void pack_rows(const KernelSet& ks, float* dst, HeadRows x, int64_t rows, int64_t d, int width) {
  for (int64_t r = 0; r < rows; r += width) {
    prefetch_panel(x, r + width, rows, d, width);
    gather_panel(ks, dst + r * d, x, r, d, static_cast<int>(std::min<int64_t>(width, rows - r)), width);
  }
}

// As pack_rows with one step more, (ceil(rows/width), d + 1, width), the last holding extra(r)
// for row r and 0 for padding: a product of two such operands adds extra_a(i) * extra_b(j)
// to its element (i, j), a row's shift computed by the micro-kernel for free.
template <typename Extra>
void pack_rows_extra(const KernelSet& ks, float* dst, HeadRows x, int64_t rows, int64_t d, int width, Extra extra) {
  for (int64_t r = 0; r < rows; r += width) {
    float* panel = dst + r * (d + 1);
    const int count = static_cast<int>(std::min<int64_t>(width, rows - r));
    prefetch_panel(x, r + width, rows, d, width);
    gather_panel(ks, panel, x, r, d, count, width);
    for (int i = 0; i < width; ++i) panel[d * width + i] = i < count ? extra(r + i) : 0.0f;
  }
}

// x (rows, d) as an operand summing over its rows whose other dimension is d: panels of
// `width` columns of x stepping along the rows, (ceil(d/width), rows, width); B panels (width
// nr) for x itself, A panels (width mr) for x^T. Rows from r0 of panel j start at
// j * rows * width + r0 * width.
int64_t cols_size(int64_t rows, int64_t d, int width) { return round_up(d, width) * rows; }
void pack_cols(const KernelSet& ks, float* dst, HeadRows x, int64_t rows, int64_t d, int width) {
  for (int64_t c = 0; c < d; c += width) {
    const int count = static_cast<int>(std::min<int64_t>(width, d - c));
    if (x.rows.type == DType::bf16)
      ks.pack_copy_bf16(dst + c * rows, x.rows.lowp() + c, x.ld, rows, count, width);
    else
      ks.pack_copy(dst + c * rows, x.rows.f32() + c, x.ld, rows, count, width);
  }
}

// count panels of a packed operand, stride floats apart.
struct Panels {
  const float* data;
  int64_t count, stride;
};

// Where a product's micro-tiles go: tile (i, j) at data + i * mr * ldc + j * col_stride.
struct Tiles {
  float* data;
  int64_t ldc, col_stride;
};

// A row-major C.
Tiles row_major(float* c, int64_t ldc, const KernelSet& ks) { return {c, ldc, ks.nr}; }

// A (kBr, kBc) tile held as kBc/nr key panels of (kBr, nr): rows of nr keys, which is at once
// a B operand summing over the queries; elementwise work on it runs over whole panels.
Tiles by_key(float* t, const KernelSet& ks) { return {t, ks.nr, kBr * ks.nr}; }

// C = alpha * A B + beta * C over whole micro-tiles, A's panels (kc, mr) by B's (kc, nr). C is
// padded to the panels' rows and columns, so no tile needs an edge case.
void tiles(const KernelSet& ks, Tiles c, Panels a, Panels b, int64_t kc, float alpha, float beta) {
  for (int64_t j = 0; j < b.count; ++j)
    for (int64_t i = 0; i < a.count; ++i)
      ks.gemm_tile(kc, a.data + i * a.stride, b.data + j * b.stride,
                   {c.data + i * ks.mr * c.ldc + j * c.col_stride, c.ldc, ks.mr, ks.nr, alpha, beta});
}

// The same with A read in place: rows_a rows (whole micro-tiles) of a row-major a, row stride
// lda, which spares packing a tile that the next product reads once.
void tiles_rows(const KernelSet& ks, Tiles c, const float* a, int64_t lda, int64_t rows_a, Panels b, int64_t kc,
                float alpha, float beta) {
  for (int64_t j = 0; j < b.count; ++j)
    for (int64_t i = 0; i < rows_a; i += ks.mr)
      ks.gemm_tile_rows(kc, a + i * lda, lda, b.data + j * b.stride,
                        {c.data + i * c.ldc + j * c.col_stride, c.ldc, ks.mr, ks.nr, alpha, beta});
}

int64_t panels(int64_t n, int width) { return (n + width - 1) / width; }

}  // namespace

// dst (rows, d) slice of an interleaved tensor += src (rows, ld_src) contiguous.
void scatter_add_head(float* dst, const float* src, int64_t rows, int64_t d, int64_t ld, int64_t ld_src) {
  for (int64_t i = 0; i < rows; ++i) {
    if (i + kPrefetchRows < rows) prefetch_row(dst + (i + kPrefetchRows) * ld, d);
    for (int64_t c = 0; c < d; ++c) dst[i * ld + c] += src[i * ld_src + c];
  }
}

// dst (rows, d) slice of an interleaved tensor += src^T, src (d, ld_src) contiguous: a block of
// keys at a time transposed by the packer into block (kTransposeKeys, d), which stays in L1,
// then added row by row (element by element, the strided adds were most of the time).
void scatter_add_head_transposed(const KernelSet& ks, float* dst, const float* src, int64_t rows, int64_t d, int64_t ld,
                                 int64_t ld_src, float* block) {
  for (int64_t j0 = 0; j0 < rows; j0 += kTransposeKeys) {
    const int64_t n = std::min(kTransposeKeys, rows - j0);
    for (int64_t j = j0 + n; j < std::min(rows, j0 + n + kPrefetchRows); ++j) prefetch_row(dst + j * ld, d);
    ks.pack_gather(block, src + j0, ld_src, n, static_cast<int>(d), static_cast<int>(d));
    scatter_add_head(dst + j0 * ld, block, n, d, ld, d);
  }
}

void online_softmax(const KernelSet& ks, float* s, float* acc, int64_t ld, SoftmaxRows& stats, int64_t br, int64_t bc,
                    int64_t i0, int64_t j0, const uint8_t* mask, bool causal) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  float *row_max = stats.max.data(), *row_sum = stats.sum.data();
  for (int64_t r = 0; r < br; ++r) {
    float* srow = s + r * kBc;
    if (mask || causal)
      for (int64_t c = 0; c < bc; ++c)
        if ((mask && !mask[j0 + c]) || (causal && j0 + c > i0 + r)) srow[c] = kNegInf;
    const float m_new = std::max(row_max[r], ks.row_max(srow, bc));
    if (m_new == kNegInf) {  // nothing visible to this row yet: contributes nothing
      // ... unless a score is NaN (a NaN query): then the row's output is NaN, as PyTorch's.
      if (std::any_of(srow, srow + bc, [](float x) { return std::isnan(x); }))
        row_max[r] = row_sum[r] = std::numeric_limits<float>::quiet_NaN();
      std::fill(srow, srow + bc, 0.0f);
      continue;
    }
    const float correction = std::exp(row_max[r] - m_new);  // exp(-inf) = 0 on the first block
    row_sum[r] = row_sum[r] * correction + ks.exp_shift_sum(srow, bc, m_new);
    row_max[r] = m_new;
    if (correction != 1.0f)
      for (int64_t c = 0; c < ld; ++c) acc[r * ld + c] *= correction;
  }
}

void finish_rows(TensorOut o, int64_t first, int64_t ld, float* lse, float* acc, int64_t ld_acc,
                 const SoftmaxRows& stats, int64_t br, int64_t d) {
  const float *row_max = stats.max.data(), *row_sum = stats.sum.data();
  const int64_t width = dtype_size(o.type);
  for (int64_t r = 0; r < br; ++r) {
    const float inv = row_sum[r] == 0.0f ? 0.0f : 1.0f / row_sum[r];  // a row that saw no key: zeros
    const int64_t orow = first + r * ld;
    if (r + kPrefetchRows < br)
      prefetch_bytes(static_cast<const char*>(o.data) + (orow + kPrefetchRows * ld) * width, d * width);
    for (int64_t c = 0; c < d; ++c) acc[r * ld_acc + c] *= inv;
    store_values(o, orow, acc + r * ld_acc, d);
    if (lse) lse[r] = row_max[r] + std::log(row_sum[r]);
  }
}

std::vector<float> row_deltas(HeadRows dout, HeadRows o, int64_t N, int64_t d, bool round_dout) {
  const KernelSet& ks = active_kernels();
  std::vector<float> delta(N), o_row(d), dout_row(round_dout ? d : 0);  // o_row: a bf16 row of o, widened
  for (int64_t i = 0; i < N; ++i) {
    const float* dr = dout.rows.f32() + i * dout.ld;
    if (i + kPrefetchRows < N) {
      prefetch_row(dr + kPrefetchRows * dout.ld, d);
      prefetch_panel(o, i + kPrefetchRows, N, d, 1);
    }
    if (round_dout) {
      ks.through_bf16(dout_row.data(), dr, d);
      dr = dout_row.data();
    }
    const float* orow = load_values(o.rows, i * o.ld, d, o_row.data());
    float sum = 0.0f;
    for (int64_t c = 0; c < d; ++c) sum += dr[c] * orow[c];
    delta[i] = sum;
  }
  return delta;
}

namespace {

// The forward pass shared by the training attention (lse kept, nothing masked) and the text
// encoder's (causal and padding masks, no lse). o (B, N, H*d), any storage type; lse (B, H, N)
// or null.
void attention_forward_impl(TensorOut o, float* lse, TensorRef q, TensorRef k, TensorRef v, const uint8_t* key_mask,
                            bool causal, int64_t B, int64_t N, int64_t M, int64_t H, int64_t d, float scale) {
  const int64_t ld = H * d;
  const KernelSet& ks = active_kernels();
  const int mr = ks.mr, nr = ks.nr;
  const int64_t dp = round_up(d, nr);  // accumulator row stride: whole column panels
  parallel_for(B * H, [&](int64_t task) {
    const int64_t b = task / H, h = task % H;
    auto at = [&](int64_t rows) { return b * rows * ld + h * d; };  // a head's first element
    TaskScratch& ws = tls_scratch;
    ws.reset({N * d, M * d, M * d, rows_size(N, d, mr), rows_size(M, d, nr), cols_size(M, d, nr), kBr * kBc, kBr * dp});
    const HeadRows qh = head_rows(q, at(N), N, d, ld, ws.take(N * d));  // (N, d)
    const HeadRows kh = head_rows(k, at(M), M, d, ld, ws.take(M * d));  // (M, d)
    const HeadRows vh = head_rows(v, at(M), M, d, ld, ws.take(M * d));  // (M, d)
    float* q_a = ws.take(rows_size(N, d, mr));                          // Q as A panels (d, mr)
    float* k_b = ws.take(rows_size(M, d, nr));                          // K^T as B panels (d, nr)
    float* v_cols = ws.take(cols_size(M, d, nr));                       // V as B panels (M, nr)
    pack_rows(ks, q_a, qh, N, d, mr);
    pack_rows(ks, k_b, kh, M, d, nr);
    pack_cols(ks, v_cols, vh, M, d, nr);
    const uint8_t* mask = key_mask ? key_mask + b * M : nullptr;  // (M)
    float* s = ws.take(kBr * kBc);                                // (kBr, kBc) scores, then probabilities
    float* acc = ws.take(kBr * dp);                               // (kBr, dp) unnormalised output
    SoftmaxRows stats;
    for (int64_t i0 = 0; i0 < N; i0 += kBr) {
      const int64_t br = std::min(kBr, N - i0), row_panels = panels(br, mr);
      stats.start(acc, kBr * dp);
      const int64_t key_end = causal ? std::min(M, i0 + br) : M;  // later keys are all masked
      for (int64_t j0 = 0; j0 < key_end; j0 += kBc) {
        const int64_t bc = std::min(kBc, M - j0);
        // s = scale * q_i k_j^T   (br, bc)
        tiles(ks, row_major(s, kBc, ks), {q_a + i0 * d, row_panels, d * mr}, {k_b + j0 * d, panels(bc, nr), d * nr}, d,
              scale, 0.0f);
        online_softmax(ks, s, acc, dp, stats, br, bc, i0, j0, mask, causal);
        // acc += p v_j   (br, d)
        tiles_rows(ks, row_major(acc, dp, ks), s, kBc, row_panels * mr, {v_cols + j0 * nr, dp / nr, M * nr}, bc, 1.0f,
                   1.0f);
      }
      finish_rows(o, at(N) + i0 * ld, ld, lse ? lse + (b * H + h) * N + i0 : nullptr, acc, dp, stats, br, d);
    }
  });
}

}  // namespace

void CpuOps::attention_forward(TensorOut o, float* lse, TensorRef q, TensorRef k, TensorRef v, int64_t B, int64_t N,
                               int64_t M, int64_t H, int64_t d, float scale, DType compute) {
  LT_CPU_PROFILE("attention_forward", {B, H, N, M, d});
  profile_count_flops(4.0 * B * H * N * M * d);  // S = q k^T, o = P v
  if (attention_bf16_applies(compute, q, k, v)) return attention_forward_bf16(o, lse, q, k, v, B, N, M, H, d, scale);
  attention_forward_impl(o, lse, q, k, v, nullptr, false, B, N, M, H, d, scale);
}

void CpuOps::attention_masked_forward(float* o, const float* q, const float* k, const float* v, const uint8_t* key_mask,
                                      bool causal, int64_t B, int64_t N, int64_t M, int64_t H, int64_t d, float scale) {
  LT_CPU_PROFILE("attention_masked_forward", {B, H, N, M, d});
  profile_count_flops(4.0 * B * H * N * M * d);
  attention_forward_impl(o, nullptr, q, k, v, key_mask, causal, B, N, M, H, d, scale);
}

void CpuOps::attention_backward(float* dq, float* dk, float* dv, const float* dout, TensorRef q, TensorRef k,
                                TensorRef v, TensorRef o, const float* lse, int64_t B, int64_t N, int64_t M, int64_t H,
                                int64_t d, float scale, DType compute) {
  LT_CPU_PROFILE("attention_backward", {B, H, N, M, d});
  profile_count_flops(8.0 * B * H * N * M * d);  // dv, dP, dq, dk; recomputing S is not counted
  if (attention_bf16_applies(compute, q, k, v))
    return attention_backward_bf16(dq, dk, dv, dout, q, k, v, o, lse, B, N, M, H, d, scale);
  const int64_t ld = H * d, d1 = d + 1;
  const KernelSet& ks = active_kernels();
  const int mr = ks.mr, nr = ks.nr;
  // Accumulators padded to whole tiles: dq (q_rows, dp); dk, dv transposed, (d_rows, keys).
  const int64_t dp = round_up(d, nr), q_rows = round_up(N, mr), d_rows = round_up(d, mr), keys = round_up(M, nr);
  parallel_for(B * H, [&](int64_t task) {
    const int64_t b = task / H, h = task % H;
    auto at = [&](int64_t rows) { return b * rows * ld + h * d; };  // a head's first element
    TaskScratch& ws = tls_scratch;
    ws.reset({N * d, M * d, M * d, N * d, rows_size(N, d1, mr), rows_size(M, d1, nr), rows_size(N, d1, mr),
              rows_size(M, d1, nr), cols_size(N, d, mr), cols_size(N, d, mr), cols_size(M, d, nr), q_rows * dp,
              d_rows * keys, d_rows * keys, kBr * kBc, kBr * kBc, kTransposeKeys * d});
    const HeadRows qh = head_rows(q, at(N), N, d, ld, ws.take(N * d));  // (N, d)
    const HeadRows kh = head_rows(k, at(M), M, d, ld, ws.take(M * d));  // (M, d)
    const HeadRows vh = head_rows(v, at(M), M, d, ld, ws.take(M * d));  // (M, d)
    const HeadRows oh = head_rows(o, at(N), N, d, ld, ws.take(N * d));  // (N, d)
    const HeadRows doh{dout + at(N), ld};                               // (N, d)
    const float* lse_h = lse + (b * H + h) * N;                         // (N)
    const std::vector<float> delta = row_deltas(doh, oh, N, d, false);  // (N)
    // Each operand in the orientations its products read. The score products come out already
    // shifted, scale q k^T - lse_i and dout v^T - delta_i: the rows carry -lse_i / scale and
    // -delta_i as one more step, the keys a 1.
    auto one = [](int64_t) { return 1.0f; };
    float* q_a = ws.take(rows_size(N, d1, mr));    // Q as A (d + 1, mr) panels
    float* k_b = ws.take(rows_size(M, d1, nr));    // K^T as B (d + 1, nr) panels
    float* do_a = ws.take(rows_size(N, d1, mr));   // dout as A (d + 1, mr) panels
    float* v_b = ws.take(rows_size(M, d1, nr));    // V^T as B (d + 1, nr) panels
    float* q_t = ws.take(cols_size(N, d, mr));     // Q^T as A (N, mr) panels
    float* do_t = ws.take(cols_size(N, d, mr));    // dout^T as A (N, mr) panels
    float* k_cols = ws.take(cols_size(M, d, nr));  // K as B (M, nr) panels
    pack_rows_extra(ks, q_a, qh, N, d, mr, [&](int64_t i) { return -lse_h[i] / scale; });
    pack_rows_extra(ks, k_b, kh, M, d, nr, one);
    pack_rows_extra(ks, do_a, doh, N, d, mr, [&](int64_t i) { return -delta[i]; });
    pack_rows_extra(ks, v_b, vh, M, d, nr, one);
    pack_cols(ks, q_t, qh, N, d, mr);
    pack_cols(ks, do_t, doh, N, d, mr);
    pack_cols(ks, k_cols, kh, M, d, nr);
    float* dqh = ws.take(q_rows * dp);     // (N, dp)
    float* dk_t = ws.take(d_rows * keys);  // (d, M) transposed
    float* dv_t = ws.take(d_rows * keys);  // (d, M) transposed
    std::fill(dqh, dqh + q_rows * dp, 0.0f);
    std::fill(dk_t, dk_t + d_rows * keys, 0.0f);
    std::fill(dv_t, dv_t + d_rows * keys, 0.0f);
    float* p = ws.take(kBr * kBc);   // (kBr, kBc) probabilities, key panels
    float* ds = ws.take(kBr * kBc);  // (kBr, kBc) their gradient, then the scores', key panels
    for (int64_t j0 = 0; j0 < M; j0 += kBc) {
      const int64_t bc = std::min(kBc, M - j0), key_panels = panels(bc, nr);
      for (int64_t i0 = 0; i0 < N; i0 += kBr) {
        const int64_t br = std::min(kBr, N - i0), row_panels = panels(br, mr);
        const Panels p_b = {p, key_panels, kBr * nr}, ds_b = {ds, key_panels, kBr * nr};
        const Panels q_ti = {q_t + i0 * mr, panels(d, mr), N * mr}, do_ti = {do_t + i0 * mr, panels(d, mr), N * mr};
        // p = exp(scale q_i k_j^T - lse_i)   (br, bc)
        tiles(ks, by_key(p, ks), {q_a + i0 * d1, row_panels, d1 * mr}, {k_b + j0 * d1, key_panels, d1 * nr}, d1, scale,
              0.0f);
        for (int64_t u = 0; u < key_panels; ++u) ks.exp_shift_sum(p + u * kBr * nr, br * nr, 0.0f);
        // dv_j^T += dout_i^T p   (d, bc)
        tiles(ks, row_major(dv_t + j0, keys, ks), do_ti, p_b, br, 1.0f, 1.0f);
        // ds = p * (dout_i v_j^T - delta_i)   (br, bc)
        tiles(ks, by_key(ds, ks), {do_a + i0 * d1, row_panels, d1 * mr}, {v_b + j0 * d1, key_panels, d1 * nr}, d1, 1.0f,
              0.0f);
        for (int64_t u = 0; u < key_panels; ++u) {
          const float* pu = p + u * kBr * nr;
          float* dsu = ds + u * kBr * nr;
          for (int64_t e = 0; e < br * nr; ++e) dsu[e] *= pu[e];
        }
        // dk_j^T += scale q_i^T ds   (d, bc)
        tiles(ks, row_major(dk_t + j0, keys, ks), q_ti, ds_b, br, scale, 1.0f);
        // dq_i += scale ds k_j   (br, d), ds read in place a key panel at a time (its rows of nr
        // keys are A's rows): re-packing ds whole into A panels cost more than the C traffic of
        // summing over nr keys per call.
        for (int64_t u = 0; u < key_panels; ++u) {
          const int64_t kc = std::min<int64_t>(nr, bc - u * nr);
          tiles_rows(ks, row_major(dqh + i0 * dp, dp, ks), ds + u * kBr * nr, nr, row_panels * mr,
                     {k_cols + (j0 + u * nr) * nr, dp / nr, M * nr}, kc, scale, 1.0f);
        }
      }
    }
    scatter_add_head(dq + at(N), dqh, N, d, ld, dp);
    float* block = ws.take(kTransposeKeys * d);  // (kTransposeKeys, d)
    scatter_add_head_transposed(ks, dk + at(M), dk_t, M, d, ld, keys, block);
    scatter_add_head_transposed(ks, dv + at(M), dv_t, M, d, ld, keys, block);
  });
}

}  // namespace lt::cpu
