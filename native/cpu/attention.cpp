// Fused multi-head attention (flash-attention style) on the CPU. Each (batch, head) is one
// task; inside it, query blocks of kBr rows meet key blocks of kBc rows, so the scores held
// at any time are one (kBr, kBc) tile. The forward keeps an online softmax (running max and
// sum) and stores the log-sum-exp; the backward recomputes each probability tile from it.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu_ops.h"
#include "gemm.h"
#include "kernels.h"
#include "thread_pool.h"

namespace lt::cpu {
namespace {

constexpr int64_t kBr = 96;   // query rows per block: a multiple of every kernel set's mr
constexpr int64_t kBc = 128;  // key rows per block: a multiple of every kernel set's nr

// Copies one head's (rows, d) slice out of an interleaved (rows, ld) tensor. Working on
// contiguous copies matters: with ld = H*d the rows sit a multiple of 2 KiB apart, which maps
// a whole key block onto a few L1 sets.
std::vector<float> gather_head(const float* src, int64_t rows, int64_t d, int64_t ld) {
  std::vector<float> out(rows * d);
  for (int64_t i = 0; i < rows; ++i) std::copy(src + i * ld, src + i * ld + d, out.data() + i * d);
  return out;
}

// The same from a tensor of any storage type, widened to fp32; offset is the head's first
// element in src.
std::vector<float> gather_head(TensorRef src, int64_t offset, int64_t rows, int64_t d, int64_t ld) {
  if (src.type == DType::f32) return gather_head(src.f32() + offset, rows, d, ld);
  std::vector<float> out(rows * d);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = 0; c < d; ++c) out[i * d + c] = src.at(offset + i * ld + c);
  return out;
}

// dst (rows, d) slice of an interleaved tensor += src (rows, d) contiguous.
void scatter_add_head(float* dst, const std::vector<float>& src, int64_t rows, int64_t d, int64_t ld) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = 0; c < d; ++c) dst[i * ld + c] += src[i * d + c];
}

void gemm_tile(float* C, const float* A, const float* B, int64_t M, int64_t N, int64_t K, bool transA, bool transB,
               float alpha, float beta, int64_t lda, int64_t ldb, int64_t ldc) {
  gemm_serial({C, A, B, M, N, K, transA, transB, alpha, beta, lda, ldb, ldc});
}

}  // namespace

namespace {

// The forward pass shared by the training attention (lse kept, nothing masked) and the text
// encoder's (causal and padding masks, no lse). o (B, N, H*d), any storage type; lse (B, H, N)
// or null.
void attention_forward_impl(TensorOut o, float* lse, TensorRef q, TensorRef k, TensorRef v, const uint8_t* key_mask,
                            bool causal, int64_t B, int64_t N, int64_t M, int64_t H, int64_t d, float scale) {
  const int64_t ld = H * d;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  parallel_for(B * H, [&](int64_t task) {
    const int64_t b = task / H, h = task % H;
    // One head's rows inside an interleaved (rows, H*d) tensor; keeps the pointer's constness.
    auto at = [&](int64_t rows) { return b * rows * ld + h * d; };  // a head's first element
    const std::vector<float> qh = gather_head(q, at(N), N, d, ld);  // (N, d)
    const std::vector<float> kh = gather_head(k, at(M), M, d, ld);  // (M, d)
    const std::vector<float> vh = gather_head(v, at(M), M, d, ld);  // (M, d)
    const uint8_t* mask = key_mask ? key_mask + b * M : nullptr;    // (M)
    const bool masked = mask || causal;
    const auto& ks = active_kernels();
    std::vector<float> s(kBr * kBc);  // (kBr, kBc) scores, then probabilities
    std::vector<float> acc(kBr * d);  // (kBr, d) unnormalised output
    std::vector<float> row_max(kBr), row_sum(kBr);
    for (int64_t i0 = 0; i0 < N; i0 += kBr) {
      const int64_t br = std::min(kBr, N - i0);
      std::fill(row_max.begin(), row_max.end(), kNegInf);
      std::fill(row_sum.begin(), row_sum.end(), 0.0f);
      std::fill(acc.begin(), acc.end(), 0.0f);
      const int64_t key_end = causal ? std::min(M, i0 + br) : M;  // later keys are all masked
      for (int64_t j0 = 0; j0 < key_end; j0 += kBc) {
        const int64_t bc = std::min(kBc, M - j0);
        // s = scale * q_i k_j^T   (br, bc)
        gemm_tile(s.data(), qh.data() + i0 * d, kh.data() + j0 * d, br, bc, d, false, true, scale, 0.0f, d, d, kBc);
        for (int64_t r = 0; r < br; ++r) {
          float* srow = s.data() + r * kBc;
          if (masked)
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
            for (int64_t c = 0; c < d; ++c) acc[r * d + c] *= correction;
        }
        // acc += p v_j   (br, d)
        gemm_tile(acc.data(), s.data(), vh.data() + j0 * d, br, d, bc, false, false, 1.0f, 1.0f, kBc, d, d);
      }
      for (int64_t r = 0; r < br; ++r) {
        const float inv = row_sum[r] == 0.0f ? 0.0f : 1.0f / row_sum[r];  // a row that saw no key: zeros
        const int64_t orow = at(N) + (i0 + r) * ld;                       // (d) of o's (N, d) head, rows strided by ld
        for (int64_t c = 0; c < d; ++c) o.set(orow + c, acc[r * d + c] * inv);
        if (lse) lse[(b * H + h) * N + i0 + r] = row_max[r] + std::log(row_sum[r]);
      }
    }
  });
}

}  // namespace

void CpuOps::attention_forward(TensorOut o, float* lse, TensorRef q, TensorRef k, TensorRef v, int64_t B, int64_t N,
                               int64_t M, int64_t H, int64_t d, float scale, DType) {
  attention_forward_impl(o, lse, q, k, v, nullptr, false, B, N, M, H, d, scale);
}

void CpuOps::attention_masked_forward(float* o, const float* q, const float* k, const float* v, const uint8_t* key_mask,
                                      bool causal, int64_t B, int64_t N, int64_t M, int64_t H, int64_t d, float scale) {
  attention_forward_impl(o, nullptr, q, k, v, key_mask, causal, B, N, M, H, d, scale);
}

void CpuOps::attention_backward(float* dq, float* dk, float* dv, const float* dout, TensorRef q, TensorRef k,
                                TensorRef v, TensorRef o, const float* lse, int64_t B, int64_t N, int64_t M, int64_t H,
                                int64_t d, float scale, DType) {
  const int64_t ld = H * d;
  parallel_for(B * H, [&](int64_t task) {
    const int64_t b = task / H, h = task % H;
    // One head's rows inside an interleaved (rows, H*d) tensor; keeps the pointer's constness.
    auto head = [&](auto* base, int64_t rows) { return base + b * rows * ld + h * d; };
    auto at = [&](int64_t rows) { return b * rows * ld + h * d; };        // a head's first element
    const std::vector<float> qh = gather_head(q, at(N), N, d, ld);        // (N, d)
    const std::vector<float> kh = gather_head(k, at(M), M, d, ld);        // (M, d)
    const std::vector<float> vh = gather_head(v, at(M), M, d, ld);        // (M, d)
    const std::vector<float> doh = gather_head(head(dout, N), N, d, ld);  // (N, d)
    const std::vector<float> oh = gather_head(o, at(N), N, d, ld);        // (N, d)
    std::vector<float> dqh(N * d), dkh(M * d), dvh(M * d);                // contiguous accumulators
    const float* lse_h = lse + (b * H + h) * N;
    const auto& ks = active_kernels();
    // delta_i = sum_c dout_ic o_ic = sum_j p_ij dp_ij, the softmax backward's row term.
    std::vector<float> delta(N);
    for (int64_t i = 0; i < N; ++i) {
      float sum = 0.0f;
      for (int64_t c = 0; c < d; ++c) sum += doh[i * d + c] * oh[i * d + c];
      delta[i] = sum;
    }
    std::vector<float> p(kBr * kBc), dp(kBr * kBc);  // (kBr, kBc) tiles
    for (int64_t j0 = 0; j0 < M; j0 += kBc) {
      const int64_t bc = std::min(kBc, M - j0);
      for (int64_t i0 = 0; i0 < N; i0 += kBr) {
        const int64_t br = std::min(kBr, N - i0);
        // p = exp(scale q_i k_j^T - lse_i)
        gemm_tile(p.data(), qh.data() + i0 * d, kh.data() + j0 * d, br, bc, d, false, true, scale, 0.0f, d, d, kBc);
        for (int64_t r = 0; r < br; ++r) ks.exp_shift_sum(p.data() + r * kBc, bc, lse_h[i0 + r]);
        // dv_j += p^T dout_i   (bc, d)
        gemm_tile(dvh.data() + j0 * d, p.data(), doh.data() + i0 * d, bc, d, br, true, false, 1.0f, 1.0f, kBc, d, d);
        // dp = dout_i v_j^T   (br, bc)
        gemm_tile(dp.data(), doh.data() + i0 * d, vh.data() + j0 * d, br, bc, d, false, true, 1.0f, 0.0f, d, d, kBc);
        // ds = p * (dp - delta_i), stored over dp
        for (int64_t r = 0; r < br; ++r) {
          const float* prow = p.data() + r * kBc;
          float* dsrow = dp.data() + r * kBc;
          for (int64_t c = 0; c < bc; ++c) dsrow[c] = prow[c] * (dsrow[c] - delta[i0 + r]);
        }
        // dq_i += scale ds k_j   (br, d);   dk_j += scale ds^T q_i   (bc, d)
        gemm_tile(dqh.data() + i0 * d, dp.data(), kh.data() + j0 * d, br, d, bc, false, false, scale, 1.0f, kBc, d, d);
        gemm_tile(dkh.data() + j0 * d, dp.data(), qh.data() + i0 * d, bc, d, br, true, false, scale, 1.0f, kBc, d, d);
      }
    }
    scatter_add_head(head(dq, N), dqh, N, d, ld);
    scatter_add_head(head(dk, M), dkh, M, d, ld);
    scatter_add_head(head(dv, M), dvh, M, d, ld);
  });
}

}  // namespace lt::cpu
