// AdamW and the global gradient norm on the device, each one launch over every tensor
// (multi-tensor apply): a table of the tensors goes to the device once per call, and each
// thread finds its tensor by binary search over the table's running offsets.
#include <algorithm>
#include <cmath>
#include <vector>

#include "common.cuh"
#include "cuda_ops.h"
#include "profile.h"

namespace lt::cuda {
namespace {

struct Slot {
  float *param, *exp_avg, *exp_avg_sq;
  const float* grad;
  int64_t start;  // running offset of this tensor in the flattened index space
};

// The slot holding flat index i: the last with start <= i.
__device__ inline const Slot& slot_of(const Slot* slots, int64_t count, int64_t i) {
  int64_t lo = 0, hi = count - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (slots[mid].start <= i)
      lo = mid;
    else
      hi = mid - 1;
  }
  return slots[lo];
}

__global__ void adamw_kernel(const Slot* slots, int64_t count, int64_t total, float beta1, float beta2, float eps,
                             float decay, float step_size, float bc2_sqrt, float grad_scale) {
  LT_FOR(i, total) {
    const Slot& s = slot_of(slots, count, i);
    const int64_t j = i - s.start;
    const float g = s.grad[j] * grad_scale;
    float p = s.param[j] * decay;
    const float m = s.exp_avg[j] + (g - s.exp_avg[j]) * (1.0f - beta1);
    const float v = beta2 * s.exp_avg_sq[j] + (1.0f - beta2) * g * g;
    p -= step_size * m / (sqrtf(v) / bc2_sqrt + eps);
    s.param[j] = p;
    s.exp_avg[j] = m;
    s.exp_avg_sq[j] = v;
  }
}

__global__ void sum_squares_kernel(double* total_out, const Slot* slots, int64_t count, int64_t total) {
  double acc = 0.0;
  LT_FOR(i, total) {
    const Slot& s = slot_of(slots, count, i);
    const double g = s.grad[i - s.start];
    acc += g * g;
  }
  acc = block_sum_double(acc);
  if (threadIdx.x == 0) atomicAdd(total_out, acc);
}

__global__ void scale_kernel(const Slot* slots, int64_t count, int64_t total, float coef) {
  LT_FOR(i, total) {
    const Slot& s = slot_of(slots, count, i);
    const_cast<float*>(s.grad)[i - s.start] *= coef;
  }
}

// The slots on the device; returns the flattened length.
int64_t upload_slots(DeviceBuffer& buf, std::vector<Slot>& slots) {
  int64_t total = 0;
  for (Slot& s : slots) {
    const int64_t n = s.start;  // callers pass each tensor's length here
    s.start = total;
    total += n;
  }
  void* d = buf.reserve(static_cast<int64_t>(slots.size() * sizeof(Slot)));
  LT_CUDA(cudaMemcpyAsync(d, slots.data(), slots.size() * sizeof(Slot), cudaMemcpyHostToDevice, 0));
  return total;
}

// Enough blocks to fill the device a few times over; the grid-stride loops do the rest.
unsigned grid_for(int64_t total) {
  static const unsigned cap = [] {
    int device = 0, sms = 0;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    return static_cast<unsigned>(sms > 0 ? sms : 108) * 8u;
  }();
  return std::min<unsigned>(blocks_for(total), cap);
}

}  // namespace

void CudaOps::adamw(const AdamWTensor* tensors, int64_t count, float lr, float beta1, float beta2, float eps,
                    float weight_decay, int64_t step, float grad_scale) {
  LT_PROFILE("adamw");
  if (count <= 0) return;
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  std::vector<Slot> slots;
  for (int64_t t = 0; t < count; ++t)
    slots.push_back({tensors[t].param, tensors[t].exp_avg, tensors[t].exp_avg_sq, tensors[t].grad, tensors[t].n});
  DeviceBuffer table;
  const int64_t total = upload_slots(table, slots);
  adamw_kernel<<<grid_for(total), kThreads>>>(static_cast<const Slot*>(table.data()), count, total, beta1, beta2, eps,
                                              1.0f - lr * weight_decay, static_cast<float>(lr / bc1),
                                              static_cast<float>(std::sqrt(bc2)), grad_scale);
  LT_LAUNCHED("adamw");
  // The table must outlive the kernel: its stream-ordered free is queued behind it.
}

double CudaOps::clip_grad_norm(float* const* grads, const int64_t* sizes, int64_t count, double max_norm) {
  LT_PROFILE("clip_grad_norm");
  if (count <= 0) return 0.0;
  std::vector<Slot> slots;
  for (int64_t t = 0; t < count; ++t) slots.push_back({nullptr, nullptr, nullptr, grads[t], sizes[t]});
  DeviceBuffer table, sum;
  const int64_t total = upload_slots(table, slots);
  double* d_sum = static_cast<double*>(sum.reserve(sizeof(double)));
  LT_CUDA(cudaMemsetAsync(d_sum, 0, sizeof(double), 0));
  const Slot* d_slots = static_cast<const Slot*>(table.data());
  sum_squares_kernel<<<grid_for(total), kThreads>>>(d_sum, d_slots, count, total);
  LT_LAUNCHED("grad norm");
  double host = 0.0;
  LT_CUDA(cudaMemcpy(&host, d_sum, sizeof(double), cudaMemcpyDeviceToHost));
  const double norm = std::sqrt(host);
  if (max_norm > 0.0 && max_norm / (norm + 1e-6) < 1.0) {
    scale_kernel<<<grid_for(total), kThreads>>>(d_slots, count, total, static_cast<float>(max_norm / (norm + 1e-6)));
    LT_LAUNCHED("clip_grad_norm scale");
  }
  return norm;
}

}  // namespace lt::cuda
