#include "prior.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <stdexcept>
#include <utility>

#include "../rng.h"
#include "timestep.h"

namespace lt {

struct Prior::LoraTensors {
  float *A, *B;              // (r, in), (out, r)
  float *dA, *dB;            // gradients, same shapes
  float *mA, *vA, *mB, *vB;  // AdamW moments
  int slot;                  // position among the LoRA layers (forward order)
};

struct Prior::Linear {
  std::string name;  // module path in diffusers' state dict, e.g. "blocks.2.attention.to_q"
  int64_t in, out;
  TensorRef W{nullptr};  // (out, in), PriorConfig::weight_type
  float* b = nullptr;    // (out)
  int64_t index;         // position in the model, seeds this layer's LoRA dropout
  bool adaptable;        // LoRA supported here (the Linear layers inside the blocks)
  std::unique_ptr<LoraTensors> lora;
};

// The prior's blocks at one depth, resolved into pointers to their layers and parameters (again
// only after loading moved them), so a step looks nothing up by name.
struct Prior::Block {
  // ResBlock (blocks.3d): x + channelwise(LN(depthwise(x)))
  float* depthwise_w;  // (c, 1, 3, 3)
  float* depthwise_b;  // (c)
  Linear* fc1;         // channelwise.0: c -> 4c
  float* grn_gamma;    // (4c) channelwise.2
  float* grn_beta;     // (4c)
  Linear* fc2;         // channelwise.4: 4c -> c
  // TimestepBlock (blocks.3d+1): x * (1 + a) + b
  Linear* mapper;  // c_r -> 2c, [a | b]
  // AttnBlock (blocks.3d+2): x + to_out(attention(to_q(LN x), to_k/to_v([LN x; kv])))
  Linear* kv_mapper;                    // kv_mapper.1: c -> c, after SiLU
  Linear *to_q, *to_k, *to_v, *to_out;  // c -> c each
};

// An activation the backward reads. In fp32, f32 is the block's own buffer. In mixed
// precision training only lowp is set: the op producing the activation writes it in the
// low-precision type (output) and the ops after it and the backward read it so (saved): half
// the bytes, the bulk of the arena. Activations no adapter needs in the backward share one
// scratch, as does everything in a forward-only plan.
struct Prior::Saved {
  float* f32 = nullptr;
  float* lowp = nullptr;  // (n) of PriorConfig::weight_type, in arena floats
};

// Every activation the backward reads, and the backward's scratch, as views into one arena
// (llm.c's ActivationTensors). P = H*W latent positions, T text tokens, S = P + T keys, r the
// LoRA rank. A LoRA intermediate is null where its Linear has no adapter (xl_*: no LoRA dropout).
struct Prior::Acts {
  struct Res {
    float* dw;           // (B, P, c) depthwise output, the LayerNorm's input
    float *mean, *rstd;  // (B, P) the LayerNorm's statistics
    Saved n;             // (B, P, c) the LayerNorm's output, channelwise.0's input
    Saved u1;            // (B, P, 4c) channelwise.0's output, GELU's input
    Saved grn;           // (B, P, 4c) GELU+GRN's output
    Saved drop;          // (B, P, 4c) its dropout: channelwise.4's input
    float *xa1, *xl1;    // (B, P, r), (B, P, c) channelwise.0's x A^T, dropped-out x
    float *xa2, *xl2;    // (B, P, r), (B, P, 4c) channelwise.4's
  };
  struct Attn {
    float* kv;               // (B, T, c) kv_mapper's output
    float *mean, *rstd;      // (B, P) the LayerNorm's statistics
    float* lse;              // (B, nhead, P) attention's log-sum-exp
    float* y;                // (B, P, c) to_out's output before dropout
    Saved nx;                // (B, P, c) LN(modulated x): to_q's input
    Saved src;               // (B, S, c) [nx; kv]: to_k's and to_v's input
    Saved q, o;              // (B, P, c) queries, attention output
    Saved k, v;              // (B, S, c) keys, values
    float *xa_kv, *xl_kv;    // (B, T, r), (B, T, c)
    float *xa_q, *xl_q;      // (B, P, r), (B, P, c)
    float *xa_k, *xl_k;      // (B, S, r), (B, S, c)
    float *xa_v, *xl_v;      // (B, S, r), (B, S, c)
    float *xa_out, *xl_out;  // (B, P, r), (B, P, c)
  };
  float* x_in;                 // (B, c_in, P) the caller's x, channels first
  float* x_cl;                 // (B, P, c_in) channels last
  float* r_embed;              // (B, c_r) the timestep embedding
  float* clip;                 // (B, T, c_cond) text embeddings
  float* cm1;                  // (B, T, c) cond_mapper.0's output
  float* cm1a;                 // (B, T, c) after LeakyReLU(0.2)
  float* c_embed;              // (B, T, c) cond_mapper.2's output
  float* silu_c;               // (B, T, c) SiLU(c_embed): every kv_mapper's input
  float* out_ln;               // (B, P, c) the final LayerNorm's output
  float *out_mean, *out_rstd;  // (B, P)
  float* out_ab;               // (B, P, 2 c_in) out.1's output [a | b]
  float* out;                  // (B, c_in, P) the prior's output
  float* target;               // (B, c_in, P) the loss's target
  std::vector<float*> stream;  // (3 depth + 1) x (B, P, c) residual stream before each block and after the last
  std::vector<float*> ts_ab;   // (depth) x (B, 2c) each TimestepBlock's mapper output
  std::vector<float*> ts_xa;   // (depth) x (B, r)
  std::vector<float*> ts_xl;   // (depth) x (B, c_r)
  std::vector<Res> res;        // (depth)
  std::vector<Attn> attn;      // (depth)
  // Scratch shared by every block for the buffers above that the backward does not read unless
  // an adapter needs them (allocated only when a plan shares into them; those behind a Saved
  // activation hold bf16/fp16 in a mixed-precision training plan). GELU's output is never
  // stored (gelu_grn_* recompute it).
  float *tmp_n, *tmp_grn, *tmp_drop, *tmp_kv, *tmp_y;
  float *tmp_u1, *tmp_nx, *tmp_src, *tmp_q, *tmp_k, *tmp_v, *tmp_o;
  float *tmp_stream_in, *tmp_stream_mid, *tmp_stream_attn, *tmp_dw;
  // The backward's buffers (training plans only)
  float* dout;             // (B, c_in, P) d loss / d out
  float* d_ab;             // (B, P, 2 c_in)
  float *ds0, *ds1;        // (B, P, c) the residual stream's gradient, and a spare
  float *dc0, *dc1, *dc2;  // (B, P, c) gradients inside a block
  float *d4a, *d4b;        // (B, P, 4c) inside a ResBlock's MLP
  float* dq;               // (B, P, c)
  float *dk, *dv, *d_src;  // (B, S, c)
  float* d_kv;             // (B, T, c)
  float* d_ts;             // (B, 2c)
  float* dx_lora;          // (B, S, 4c) at most: an adapter's input gradient under LoRA dropout
};

namespace {

constexpr float kLnEps = 1e-6f;
constexpr float kGrnEps = 1e-6f;

bool ends_with_module(const std::string& name, const std::string& target) {
  if (name == target) return true;
  return name.size() > target.size() && name.compare(name.size() - target.size(), target.size(), target) == 0 &&
         name[name.size() - target.size() - 1] == '.';
}

// "blocks.N" of the ResBlock (part 0), TimestepBlock (1) or AttnBlock (2) at depth d.
std::string block_name(int64_t d, int part) { return "blocks." + std::to_string(3 * d + part); }

// Dropout streams: one per (layer, purpose), derived from the step's seed.
uint64_t site_seed(uint64_t seed, int64_t layer, int64_t purpose) {
  return derive_seed(seed, static_cast<uint64_t>(layer) * 16 + static_cast<uint64_t>(purpose));
}

}  // namespace

Prior::Prior(Ops& ops, const PriorConfig& config) : ops_(ops), config_(config), params_(ops), arena_(ops) {
  const PriorConfig& k = config_;
  if (k.c_in < 1 || k.c < 1 || k.c_cond < 1 || k.c_r < 2 || k.depth < 1 || k.nhead < 1)
    throw std::invalid_argument("prior config: c_in, c, c_cond, depth and nhead must be >= 1 and c_r >= 2");
  if (k.c % k.nhead != 0)
    throw std::invalid_argument("prior config: c (" + std::to_string(k.c) + ") must be divisible by nhead (" +
                                std::to_string(k.nhead) + ")");
  if (k.c_r / 2 < 2)
    throw std::invalid_argument("prior config: c_r must be at least 4 (the r embedding divides by c_r/2 - 1)");
  if (!(k.dropout >= 0.0f && k.dropout < 1.0f)) throw std::invalid_argument("prior config: dropout must be in [0, 1)");

  projection_ = add_linear("projection", k.c_in, k.c, {k.c, k.c_in, 1, 1}, false);
  cond_mapper_0_ = add_linear("cond_mapper.0", k.c_cond, k.c, {}, false);
  cond_mapper_2_ = add_linear("cond_mapper.2", k.c, k.c, {}, false);
  blocks_.resize(k.depth);
  for (int64_t d = 0; d < k.depth; ++d) {
    const std::string res = block_name(d, 0), ts = block_name(d, 1), at = block_name(d, 2);
    Block& b = blocks_[d];
    params_.add(res + ".depthwise.weight", {k.c, 1, 3, 3});
    params_.add(res + ".depthwise.bias", {k.c});
    b.fc1 = add_linear(res + ".channelwise.0", k.c, 4 * k.c);
    params_.add(res + ".channelwise.2.gamma", {1, 1, 1, 4 * k.c});
    params_.add(res + ".channelwise.2.beta", {1, 1, 1, 4 * k.c});
    b.fc2 = add_linear(res + ".channelwise.4", 4 * k.c, k.c);
    b.mapper = add_linear(ts + ".mapper", k.c_r, 2 * k.c);
    b.kv_mapper = add_linear(at + ".kv_mapper.1", k.c, k.c);
    b.to_q = add_linear(at + ".attention.to_q", k.c, k.c);
    b.to_k = add_linear(at + ".attention.to_k", k.c, k.c);
    b.to_v = add_linear(at + ".attention.to_v", k.c, k.c);
    b.to_out = add_linear(at + ".attention.to_out.0", k.c, k.c);
  }
  out_ = add_linear("out.1", k.c, 2 * k.c_in, {2 * k.c_in, k.c, 1, 1}, false);
}

Prior::Linear* Prior::add_linear(const std::string& module, int64_t in, int64_t out, std::vector<int64_t> wshape,
                                 bool adaptable) {
  auto l = std::make_unique<Linear>();
  l->name = module;
  l->in = in;
  l->out = out;
  params_.add(module + ".weight", wshape.empty() ? std::vector<int64_t>{out, in} : std::move(wshape),
              config_.weight_type);
  params_.add(module + ".bias", {out});
  l->index = static_cast<int64_t>(linears_.size());
  l->adaptable = adaptable;
  linears_.push_back(std::move(l));
  return linears_.back().get();
}

Prior::~Prior() { release_lora(); }

void Prior::release_lora() {
  for (Linear* l : lora_layers_) {
    LoraTensors& t = *l->lora;
    for (float* p : {t.A, t.B, t.mA, t.vA, t.mB, t.vB}) ops_.release(p);
    l->lora.reset();
  }
  if (lora_grads_) ops_.release(lora_grads_);
  lora_grads_ = nullptr;
  lora_grads_n_ = 0;
  lowest_adapter_stage_ = 3 * config_.depth;
  buckets_ = GradientBuckets();
}

void Prior::resolve_parameters() {
  if (resolved_generation_ == params_.generation()) return;
  for (auto& l : linears_) {
    l->W = params_.ref(l->name + ".weight");
    l->b = params_.get(l->name + ".bias");
  }
  for (int64_t d = 0; d < config_.depth; ++d) {
    const std::string res = block_name(d, 0);
    Block& b = blocks_[d];
    b.depthwise_w = params_.get(res + ".depthwise.weight");
    b.depthwise_b = params_.get(res + ".depthwise.bias");
    b.grn_gamma = params_.get(res + ".channelwise.2.gamma");
    b.grn_beta = params_.get(res + ".channelwise.2.beta");
  }
  resolved_generation_ = params_.generation();
}

std::vector<NamedShape> Prior::parameters() const { return params_.list(); }

void Prior::set_parameter(const std::string& name, const float* host, int64_t n) { params_.set(name, host, n); }

void Prior::enable_lora(const LoraConfig& lora) {
  if (lora.rank < 1) throw std::invalid_argument("LoRA rank must be >= 1");
  if (!(lora.dropout >= 0.0f && lora.dropout < 1.0f)) throw std::invalid_argument("LoRA dropout must be in [0, 1)");
  std::vector<Linear*> chosen;
  for (const std::string& target : lora.targets) {
    size_t before = chosen.size();
    for (auto& l : linears_) {
      if (!ends_with_module(l->name, target)) continue;
      if (!l->adaptable)
        throw std::invalid_argument(
            "LoRA target '" + target + "' matches " + l->name +
            ", which lora-train cannot adapt (supported: to_q, to_k, to_v, to_out.0, kv_mapper.1, "
            "channelwise.0, channelwise.4, mapper)");
      if (std::find(chosen.begin(), chosen.end(), l.get()) == chosen.end()) chosen.push_back(l.get());
    }
    if (chosen.size() == before)
      throw std::invalid_argument("LoRA target '" + target + "' matches no Linear layer of the prior");
  }
  std::sort(chosen.begin(), chosen.end(), [](Linear* a, Linear* b) { return a->index < b->index; });
  release_lora();
  lora_layers_ = chosen;
  lora_config_ = lora;
  // Every gradient in one block, each slice 64-byte aligned (vector loads), so that data
  // parallelism sums them across processes in one collective call.
  auto aligned = [](int64_t n) { return (n + 15) / 16 * 16; };
  for (Linear* l : lora_layers_) lora_grads_n_ += aligned(lora.rank * l->in) + aligned(l->out * lora.rank);
  lora_grads_ = ops_.alloc(lora_grads_n_);
  ops_.zero(lora_grads_, lora_grads_n_);
  float* next_grad = lora_grads_;
  for (size_t slot = 0; slot < lora_layers_.size(); ++slot) {
    Linear* l = lora_layers_[slot];
    auto t = std::make_unique<LoraTensors>();
    const int64_t na = lora.rank * l->in, nb = l->out * lora.rank;
    for (auto [ptr, n] : {std::pair<float**, int64_t>{&t->A, na},
                          {&t->mA, na},
                          {&t->vA, na},
                          {&t->B, nb},
                          {&t->mB, nb},
                          {&t->vB, nb}}) {
      *ptr = ops_.alloc(n);
      ops_.zero(*ptr, n);
    }
    t->slot = static_cast<int>(slot);
    t->dA = next_grad;
    next_grad += aligned(na);
    t->dB = next_grad;
    next_grad += aligned(nb);
    l->lora = std::move(t);
  }
  lowest_adapter_stage_ = lowest_adapter_stage();
  // Adapter buffers depend on the targets: plan the arena again on the next step.
  planned_ = {0, 0, 0, 0};
}

std::vector<NamedShape> Prior::lora_parameters() const {
  std::vector<NamedShape> out;
  for (Linear* l : lora_layers_) {
    out.push_back({l->name + ".lora_A.weight", {lora_config_.rank, l->in}});
    out.push_back({l->name + ".lora_B.weight", {l->out, lora_config_.rank}});
  }
  return out;
}

const Prior::LoraTensors& Prior::lora_tensors(const std::string& name, const char** which) const {
  for (Linear* l : lora_layers_) {
    if (name == l->name + ".lora_A.weight") return *which = "A", *l->lora;
    if (name == l->name + ".lora_B.weight") return *which = "B", *l->lora;
  }
  throw std::invalid_argument("no LoRA parameter named '" + name + "'");
}

namespace {
int64_t lora_numel(const std::vector<NamedShape>& shapes, const std::string& name) {
  for (const auto& s : shapes)
    if (s.name == name) return s.numel();
  return -1;
}
void check_count(const std::string& name, int64_t expected, int64_t n) {
  if (expected != n)
    throw std::invalid_argument("LoRA parameter '" + name + "' has " + std::to_string(expected) + " values, got " +
                                std::to_string(n));
}
}  // namespace

void Prior::set_lora(const std::string& name, const float* host, int64_t n) {
  const char* which;
  const LoraTensors& t = lora_tensors(name, &which);
  check_count(name, lora_numel(lora_parameters(), name), n);
  ops_.upload(which[0] == 'A' ? t.A : t.B, host, n);
}

void Prior::get_lora(const std::string& name, float* host, int64_t n) const {
  const char* which;
  const LoraTensors& t = lora_tensors(name, &which);
  check_count(name, lora_numel(lora_parameters(), name), n);
  ops_.download(host, which[0] == 'A' ? t.A : t.B, n);
}

void Prior::get_lora_grad(const std::string& name, float* host, int64_t n) const {
  const char* which;
  const LoraTensors& t = lora_tensors(name, &which);
  check_count(name, lora_numel(lora_parameters(), name), n);
  ops_.download(host, which[0] == 'A' ? t.dA : t.dB, n);
}

float* Prior::optimizer_buffer(const std::string& name, int64_t n) const {
  for (const char* suffix : {".exp_avg", ".exp_avg_sq"}) {
    const std::string s(suffix);
    if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) {
      const std::string param = name.substr(0, name.size() - s.size());
      const char* which;
      const LoraTensors& t = lora_tensors(param, &which);
      check_count(name, lora_numel(lora_parameters(), param), n);
      const bool a = which[0] == 'A', avg = s == ".exp_avg";
      return a ? (avg ? t.mA : t.vA) : (avg ? t.mB : t.vB);
    }
  }
  throw std::invalid_argument("no optimizer state named '" + name + "'");
}

void Prior::get_optimizer_state(const std::string& name, float* host, int64_t n) const {
  ops_.download(host, optimizer_buffer(name, n), n);
}

void Prior::set_optimizer_state(const std::string& name, const float* host, int64_t n) {
  ops_.upload(optimizer_buffer(name, n), host, n);
}

// The arena's layout, gathered in one pass: each buffer a slot, counted and then pointed into
// the one allocation. A buffer the backward does not need is bound instead to one scratch shared
// by every block, sized by the first block that shares it (scratch nobody shares is never
// allocated).
struct Prior::ArenaPlan : ArenaLayout {
  ArenaPlan(bool train, DType lowp_type, int64_t rank, bool lora_dropout)
      : train(train), lowp_type(lowp_type), rank(rank), lora_dropout(lora_dropout) {}
  bool train;         // a training plan keeps what the backward reads
  DType lowp_type;    // f32, or the type mixed precision keeps activations in
  int64_t rank;       // LoRA rank
  bool lora_dropout;  // adapters see a dropped-out input
  std::vector<std::pair<float**, float**>> shared;
  std::set<float**> scratch_taken;

  // A buffer of its own when `keep`, else the shared scratch.
  void keep_or_share(bool keep, float*& p, int64_t n, float*& scratch) {
    if (keep) return take(p, n);
    if (scratch_taken.insert(&scratch).second) take(scratch, n);
    shared.emplace_back(&p, &scratch);
  }

  // An activation a backward may read (Saved), kept when `needed` in a training plan: in the
  // low-precision type in a mixed-precision plan, written so by its op.
  void keep_saved(bool needed, Saved& v, int64_t n, float*& scratch) {
    if (!train || lowp_type == DType::f32) return keep_or_share(needed && train, v.f32, n, scratch);
    keep_or_share(needed, v.lowp, (n * dtype_size(lowp_type) + 3) / 4, scratch);
  }

  // An adapted Linear's x A^T (rows, r) and, under LoRA dropout, its dropped-out input (rows, in);
  // the latter in forward-only plans too, as Prior::forward may run with dropout.
  void lora_slots(const Linear& l, float*& xa, float*& xl, int64_t rows) {
    if (!l.lora) return;
    take(xa, rows * rank);
    if (lora_dropout) take(xl, rows * l.in);
  }

  void bind(float* arena) const override {
    ArenaLayout::bind(arena);
    for (const auto& [ptr, scratch] : shared) *ptr = *scratch;
  }
};

void Prior::plan(const StepShape& s, bool train) {
  if (!arena_.empty() && s == planned_ && (planned_train_ || !train)) return;
  const PriorConfig& k = config_;
  const int64_t B = s.B, P = s.H * s.W, T = s.T, c = k.c;
  acts_ = std::make_unique<Acts>();  // every pointer null until planned
  Acts& a = *acts_;
  ArenaPlan p(train, train ? k.weight_type : DType::f32, lora_config_.rank, lora_config_.dropout > 0.0f);
  p.take(a.x_in, B * k.c_in * P);
  p.take(a.x_cl, B * P * k.c_in);
  p.take(a.r_embed, B * k.c_r);
  p.take(a.clip, B * T * k.c_cond);
  for (float** t : {&a.cm1, &a.cm1a, &a.c_embed, &a.silu_c}) p.take(*t, B * T * c);
  // Of the residual stream only the AttnBlocks' inputs are read by the backward (their
  // LayerNorm's), and a TimestepBlock's input when its mapper has an adapter: the block
  // inputs and ResBlock outputs alternate between two scratch buffers. A forward-only plan
  // keeps none of them, nor the other activations only a backward reads.
  a.stream.assign(3 * k.depth + 1, nullptr);
  for (int64_t i = 0; i <= 3 * k.depth; ++i) {
    if (i % 3 == 0)
      p.keep_or_share(false, a.stream[i], B * P * c, a.tmp_stream_in);
    else if (i % 3 == 1)
      p.keep_or_share(train && blocks_[i / 3].mapper->lora, a.stream[i], B * P * c, a.tmp_stream_mid);
    else
      p.keep_or_share(train, a.stream[i], B * P * c, a.tmp_stream_attn);
  }
  a.res.assign(k.depth, {});
  a.attn.assign(k.depth, {});
  a.ts_ab.assign(k.depth, nullptr);
  a.ts_xa.assign(k.depth, nullptr);
  a.ts_xl.assign(k.depth, nullptr);
  for (int64_t d = 0; d < k.depth; ++d) plan_block(p, s, d);
  p.take(a.out_ln, B * P * c);
  p.take(a.out_mean, B * P);
  p.take(a.out_rstd, B * P);
  p.take(a.out_ab, B * P * 2 * k.c_in);
  p.take(a.out, B * k.c_in * P);
  if (train) plan_backward(p, s);
  arena_.allocate(p);
  planned_ = s;
  planned_train_ = train;
}

void Prior::plan_block(ArenaPlan& p, const StepShape& s, int64_t d) {
  const int64_t B = s.B, P = s.H * s.W, T = s.T, c = config_.c, S = P + T;
  const Block& L = blocks_[d];
  Acts& a = *acts_;
  Acts::Res& R = a.res[d];
  p.keep_or_share(p.train, R.dw, B * P * c, a.tmp_dw);
  p.take(R.mean, B * P);
  p.take(R.rstd, B * P);
  p.keep_saved(L.fc1->lora != nullptr, R.n, B * P * c, a.tmp_n);
  p.keep_saved(true, R.u1, B * P * 4 * c, a.tmp_u1);
  // channelwise.4's input (GELU+GRN, then dropout): its adapter's dA reads it.
  const bool fc2 = L.fc2->lora != nullptr;
  p.keep_saved(fc2, R.grn, B * P * 4 * c, a.tmp_grn);
  if (config_.dropout > 0.0f) p.keep_saved(fc2, R.drop, B * P * 4 * c, a.tmp_drop);
  p.lora_slots(*L.fc1, R.xa1, R.xl1, B * P);
  p.lora_slots(*L.fc2, R.xa2, R.xl2, B * P);
  p.take(a.ts_ab[d], B * 2 * c);
  p.lora_slots(*L.mapper, a.ts_xa[d], a.ts_xl[d], B);
  Acts::Attn& A = a.attn[d];
  p.keep_or_share(false, A.kv, B * T * c, a.tmp_kv);
  p.keep_saved(L.to_q->lora != nullptr, A.nx, B * P * c, a.tmp_nx);
  p.take(A.mean, B * P);
  p.take(A.rstd, B * P);
  p.keep_saved(L.to_k->lora || L.to_v->lora, A.src, B * S * c, a.tmp_src);
  p.keep_saved(true, A.q, B * P * c, a.tmp_q);
  p.keep_saved(true, A.k, B * S * c, a.tmp_k);
  p.keep_saved(true, A.v, B * S * c, a.tmp_v);
  p.keep_saved(true, A.o, B * P * c, a.tmp_o);
  p.take(A.lse, B * config_.nhead * P);
  p.keep_or_share(false, A.y, B * P * c, a.tmp_y);
  p.lora_slots(*L.kv_mapper, A.xa_kv, A.xl_kv, B * T);
  p.lora_slots(*L.to_q, A.xa_q, A.xl_q, B * P);
  p.lora_slots(*L.to_k, A.xa_k, A.xl_k, B * S);
  p.lora_slots(*L.to_v, A.xa_v, A.xl_v, B * S);
  p.lora_slots(*L.to_out, A.xa_out, A.xl_out, B * P);
}

void Prior::plan_backward(ArenaPlan& p, const StepShape& s) {
  const int64_t B = s.B, P = s.H * s.W, T = s.T, c = config_.c, S = P + T, c_in = config_.c_in;
  Acts& a = *acts_;
  p.take(a.target, B * c_in * P);
  p.take(a.dout, B * c_in * P);
  p.take(a.d_ab, B * P * 2 * c_in);
  for (float** t : {&a.ds0, &a.ds1, &a.dc0, &a.dc1, &a.dc2, &a.dq}) p.take(*t, B * P * c);
  p.take(a.d4a, B * P * 4 * c);
  p.take(a.d4b, B * P * 4 * c);
  for (float** t : {&a.dk, &a.dv, &a.d_src}) p.take(*t, B * S * c);
  p.take(a.d_kv, B * T * c);
  p.take(a.d_ts, B * 2 * c);
  if (p.lora_dropout) p.take(a.dx_lora, B * S * 4 * c);  // the largest rows x in of any adapted Linear
}

void Prior::linear_forward(Linear& l, TensorOut y, TensorRef x, float* xa, float* x_drop, int64_t rows, bool train,
                           uint64_t seed) {
  if (!l.lora) return ops_.linear_forward(y, x, l.W, l.b, rows, l.in, l.out);
  const float* x_lora = nullptr;
  if (train && lora_config_.dropout > 0.0f) {
    ops_.dropout_forward(x_drop, x, lora_config_.dropout, site_seed(seed, l.index, 15), rows * l.in);
    x_lora = x_drop;
  }
  ops_.lora_linear_forward(y, xa, x, x_lora, l.W, l.b, l.lora->A, l.lora->B, lora_scale(), rows, l.in, l.out,
                           lora_config_.rank);
}

void Prior::linear_backward(Linear& l, float* dx, const float* dy, TensorRef x, const float* xa, const float* x_drop,
                            float* dx_scratch, int64_t rows, bool train, uint64_t seed, bool accumulate) {
  linear_backward_rows(l, dx, dy, x, xa, x_drop, dx_scratch, rows, train, seed, accumulate);
  if (l.lora) buckets_.ready(l.lora->slot);
}

void Prior::linear_backward_rows(Linear& l, float* dx, const float* dy, TensorRef x, const float* xa,
                                 const float* x_drop, float* dx_scratch, int64_t rows, bool train, uint64_t seed,
                                 bool accumulate) {
  if (!l.lora) {
    if (dx) ops_.linear_backward(dx, nullptr, nullptr, dy, x, l.W, rows, l.in, l.out, accumulate);
    return;
  }
  const bool drop = train && lora_config_.dropout > 0.0f;
  float* dx_lora = nullptr;
  if (drop && dx) dx_lora = dx_scratch;
  ops_.lora_linear_backward(dx, dx_lora, l.lora->dA, l.lora->dB, nullptr, nullptr, dy, x, drop ? x_drop : nullptr, xa,
                            l.W, l.lora->A, l.lora->B, lora_scale(), rows, l.in, l.out, lora_config_.rank, accumulate);
  if (dx_lora) ops_.dropout_backward(dx, dx_lora, lora_config_.dropout, site_seed(seed, l.index, 15), rows * l.in);
}

void Prior::key_value_backward(Linear& l, float* d_src, const float* dy, TensorRef src, const float* xa,
                               const StepShape& s, bool accumulate) {
  const int64_t P = s.H * s.W;
  // The latents' P rows come first, with dx; then the text's T rows, adding to dA and dB only.
  linear_backward_rows(l, d_src, dy, src, xa, nullptr, nullptr, P, false, 0, accumulate);
  if (!l.lora) return;
  linear_backward_rows(l, nullptr, dy + P * l.out, src.from(P * l.in), xa + P * lora_config_.rank, nullptr, nullptr,
                       s.T, false, 0, accumulate);
  buckets_.ready(l.lora->slot);
}

TensorRef Prior::saved(const Saved& v) const {
  return v.lowp ? TensorRef(v.lowp, config_.weight_type) : TensorRef(v.f32);
}

TensorOut Prior::output(const Saved& v) const {
  return v.lowp ? TensorOut(v.lowp, config_.weight_type) : TensorOut(v.f32);
}

void Prior::run_forward(const StepShape& s, bool train, uint64_t seed) {
  const PriorConfig& k = config_;
  Acts& a = *acts_;
  const int64_t B = s.B, P = s.H * s.W, T = s.T, c = k.c, S = P + T, d_head = c / k.nhead;
  const bool dropout = train && k.dropout > 0.0f;

  ops_.transpose_cp(a.x_cl, a.x_in, B, k.c_in, P);
  linear_forward(*projection_, a.stream[0], a.x_cl, nullptr, nullptr, B * P, train, seed);
  linear_forward(*cond_mapper_0_, a.cm1, a.clip, nullptr, nullptr, B * T, train, seed);
  ops_.leaky_relu_forward(a.cm1a, a.cm1, 0.2f, B * T * c);
  linear_forward(*cond_mapper_2_, a.c_embed, a.cm1a, nullptr, nullptr, B * T, train, seed);
  ops_.silu_forward(a.silu_c, a.c_embed, B * T * c);  // every block's kv_mapper starts with SiLU

  for (int64_t d = 0; d < k.depth; ++d) {
    const Block& L = blocks_[d];
    // ResBlock: x + channelwise(LN(depthwise(x)))
    Acts::Res& R = a.res[d];
    const float* x = a.stream[3 * d];
    ops_.depthwise_conv3x3_forward(R.dw, x, L.depthwise_w, L.depthwise_b, B, s.H, s.W, c);
    ops_.layernorm_forward(output(R.n), R.mean, R.rstd, R.dw, B * P, c, kLnEps);
    linear_forward(*L.fc1, output(R.u1), saved(R.n), R.xa1, R.xl1, B * P, train, seed);
    ops_.gelu_grn_forward(output(R.grn), saved(R.u1), L.grn_gamma, L.grn_beta, B, P, 4 * c, kGrnEps);
    TensorRef fc2_in = saved(R.grn);
    if (dropout) {
      ops_.dropout_forward(output(R.drop), saved(R.grn), k.dropout, site_seed(seed, 3 * d, 1), B * P * 4 * c);
      fc2_in = saved(R.drop);
    }
    linear_forward(*L.fc2, a.stream[3 * d + 1], fc2_in, R.xa2, R.xl2, B * P, train, seed);
    ops_.axpy(a.stream[3 * d + 1], x, 1.0f, B * P * c);

    // TimestepBlock: x * (1 + a) + b from the r embedding
    linear_forward(*L.mapper, a.ts_ab[d], a.r_embed, a.ts_xa[d], a.ts_xl[d], B, train, seed);

    // AttnBlock: x + to_out(attention(q(LN x), k/v([LN x; kv_mapper(c_embed)])))
    Acts::Attn& A = a.attn[d];
    const float* xa = a.stream[3 * d + 2];
    linear_forward(*L.kv_mapper, A.kv, a.silu_c, A.xa_kv, A.xl_kv, B * T, train, seed);
    // TimestepBlock's modulation and the AttnBlock's LayerNorm in one op
    ops_.modulate_layernorm_forward(a.stream[3 * d + 2], output(A.nx), A.mean, A.rstd, a.stream[3 * d + 1], a.ts_ab[d],
                                    B, P, c, kLnEps);
    ops_.concat_seq(output(A.src), saved(A.nx), A.kv, B, P, T, c);
    // The LayerNorm and concat outputs, q, k, v and the attention output are written in the
    // kept type directly and read so (half the bytes; GEMMs and the GPU's tensor cores round
    // to that type anyway).
    linear_forward(*L.to_q, output(A.q), saved(A.nx), A.xa_q, A.xl_q, B * P, train, seed);
    linear_forward(*L.to_k, output(A.k), saved(A.src), A.xa_k, A.xl_k, B * S, train, seed);
    linear_forward(*L.to_v, output(A.v), saved(A.src), A.xa_v, A.xl_v, B * S, train, seed);
    ops_.attention_forward(output(A.o), A.lse, saved(A.q), saved(A.k), saved(A.v), B, P, S, k.nhead, d_head,
                           1.0f / std::sqrt(static_cast<float>(d_head)), k.weight_type);
    float* next = a.stream[3 * d + 3];
    linear_forward(*L.to_out, dropout ? A.y : next, saved(A.o), A.xa_out, A.xl_out, B * P, train, seed);
    if (dropout)
      ops_.dropout_add_forward(next, A.y, xa, k.dropout, site_seed(seed, 3 * d + 2, 1), B * P * c);
    else
      ops_.axpy(next, xa, 1.0f, B * P * c);
  }

  ops_.layernorm_forward(a.out_ln, a.out_mean, a.out_rstd, a.stream[3 * k.depth], B * P, c, kLnEps);
  linear_forward(*out_, a.out_ab, a.out_ln, nullptr, nullptr, B * P, train, seed);
  ops_.prior_output_forward(a.out, a.x_in, a.out_ab, B, k.c_in, P);
}

// Where the backward stands as it walks down the blocks: the residual stream's gradient and
// what every stage reads. Frozen layers pass the gradient on only as far down as the lowest
// adapter; below it nothing trains (the projection and cond_mapper are frozen and fed by data).
struct Prior::Backward {
  const StepShape& s;
  bool train, dropout, lora_dropout;
  uint64_t seed;
  int64_t lowest;  // lowest_adapter_stage_
  float* ds;       // (B, P, c) gradient of the residual stream at the current point
  float* spare;    // (B, P, c)
  // Whether an adapter lies before stage 3 d + (0 ResBlock, 1 TimestepBlock, 2 AttnBlock).
  bool trains_before(int64_t stage) const { return lowest < stage; }
};

void Prior::run_backward(const StepShape& s, bool train, uint64_t seed) {
  const PriorConfig& k = config_;
  Acts& a = *acts_;
  const int64_t B = s.B, P = s.H * s.W, c = k.c;
  ops_.zero(a.d_ab, B * P * 2 * k.c_in);
  ops_.prior_output_backward(a.d_ab, a.dout, a.x_in, a.out_ab, B, k.c_in, P);
  linear_backward(*out_, a.dc0, a.d_ab, a.out_ln, nullptr, nullptr, a.dx_lora, B * P, train, seed, false);
  Backward g{s,     train, train && k.dropout > 0.0f, train && lora_config_.dropout > 0.0f, seed, lowest_adapter_stage_,
             a.ds0, a.ds1};
  ops_.zero(g.ds, B * P * c);
  ops_.layernorm_backward(g.ds, a.dc0, a.stream[3 * k.depth], a.out_mean, a.out_rstd, B * P, c);
  for (int64_t d = k.depth - 1; d >= 0; --d) {
    if (!g.trains_before(3 * d + 3)) return;
    attention_block_backward(g, d);
    if (!g.trains_before(3 * d + 2)) return;
    timestep_block_backward(g, d);
    if (!g.trains_before(3 * d + 1)) return;
    res_block_backward(g, d);
  }
}

void Prior::attention_block_backward(Backward& g, int64_t d) {
  const PriorConfig& k = config_;
  const Block& L = blocks_[d];
  Acts& a = *acts_;
  Acts::Attn& A = a.attn[d];
  const int64_t B = g.s.B, P = g.s.H * g.s.W, T = g.s.T, c = k.c, S = P + T, d_head = c / k.nhead, nc = B * P * c;
  const bool train = g.train, below = g.trains_before(3 * d + 2);
  const uint64_t seed = g.seed;
  Linear& kv = *L.kv_mapper;
  const float* dy = g.ds;
  if (g.dropout) {  // dropout's gradient is the same mask: written, not accumulated, into dc0
    ops_.dropout_forward(a.dc0, g.ds, k.dropout, site_seed(seed, 3 * d + 2, 1), nc);
    dy = a.dc0;
  }
  // Attention's gradient feeds the adapters on its inputs and what lies below.
  const bool inputs_train = below || L.to_q->lora || L.to_k->lora || L.to_v->lora || kv.lora;
  linear_backward(*L.to_out, inputs_train ? a.dc1 : nullptr, dy, saved(A.o), A.xa_out, A.xl_out, a.dx_lora, B * P,
                  train, seed, false);
  if (!inputs_train) return;
  ops_.zero(a.dq, nc);
  ops_.zero(a.dk, B * S * c);
  ops_.zero(a.dv, B * S * c);
  ops_.attention_backward(a.dq, a.dk, a.dv, a.dc1, saved(A.q), saved(A.k), saved(A.v), saved(A.o), A.lse, B, P, S,
                          k.nhead, d_head, 1.0f / std::sqrt(static_cast<float>(d_head)), k.weight_type);
  // c_embed comes from the frozen cond_mapper and the caller's text embeddings, so the
  // keys/values from text need a gradient only to train an adapter on kv_mapper.
  float* d_kv = kv.lora ? a.d_kv : nullptr;          // (B, T, c)
  float* d_nx = below ? a.dc2 : nullptr;             // (B, P, c) d LN(x)
  float* d_src = below || d_kv ? a.d_src : nullptr;  // (B, S, c)
  // The first contribution to each input gradient overwrites it.
  linear_backward(*L.to_q, d_nx, a.dq, saved(A.nx), A.xa_q, A.xl_q, a.dx_lora, B * P, train, seed, false);
  // At batch 1 the text rows, whose input gradient would go unused, are one block of rows. (With
  // more items, splitting each made 2B smaller GEMMs that measured no faster.)
  if (d_src && !d_kv && !g.lora_dropout && B == 1) {
    key_value_backward(*L.to_k, d_src, a.dk, saved(A.src), A.xa_k, g.s, false);
    key_value_backward(*L.to_v, d_src, a.dv, saved(A.src), A.xa_v, g.s, true);
  } else {
    linear_backward(*L.to_k, d_src, a.dk, saved(A.src), A.xa_k, A.xl_k, a.dx_lora, B * S, train, seed, false);
    linear_backward(*L.to_v, d_src, a.dv, saved(A.src), A.xa_v, A.xl_v, a.dx_lora, B * S, train, seed, true);
  }
  if (d_kv) ops_.zero(d_kv, B * T * c);
  if (d_src) ops_.split_seq_backward(d_nx, d_kv, d_src, B, P, T, c);
  if (d_kv) linear_backward(kv, nullptr, d_kv, a.silu_c, A.xa_kv, A.xl_kv, a.dx_lora, B * T, train, seed, true);
  if (below) ops_.layernorm_backward(g.ds, a.dc2, a.stream[3 * d + 2], A.mean, A.rstd, B * P, c);  // d stream[3d+2]
}

void Prior::timestep_block_backward(Backward& g, int64_t d) {
  const int64_t B = g.s.B, P = g.s.H * g.s.W, c = config_.c;
  Acts& a = *acts_;
  Linear& mapper = *blocks_[d].mapper;
  const bool below = g.trains_before(3 * d + 1);
  if (below) ops_.zero(g.spare, B * P * c);
  if (mapper.lora) ops_.zero(a.d_ts, B * 2 * c);
  ops_.modulate_backward(below ? g.spare : nullptr, mapper.lora ? a.d_ts : nullptr, g.ds, a.stream[3 * d + 1],
                         a.ts_ab[d], B, P, c);
  if (mapper.lora)
    linear_backward(mapper, nullptr, a.d_ts, a.r_embed, a.ts_xa[d], a.ts_xl[d], a.dx_lora, B, g.train, g.seed, true);
  std::swap(g.ds, g.spare);  // ds: d stream[3d+1]
}

void Prior::res_block_backward(Backward& g, int64_t d) {
  const PriorConfig& k = config_;
  const Block& L = blocks_[d];
  Acts& a = *acts_;
  Acts::Res& R = a.res[d];
  const int64_t B = g.s.B, P = g.s.H * g.s.W, c = k.c, n4 = B * P * 4 * c;
  const bool train = g.train, below = g.trains_before(3 * d);
  const uint64_t seed = g.seed;
  // channelwise.4's input gradient feeds only channelwise.0's adapter and what lies below.
  float* d_fc2 = below || L.fc1->lora ? a.d4a : nullptr;  // (B, P, 4c)
  linear_backward(*L.fc2, d_fc2, g.ds, saved(g.dropout ? R.drop : R.grn), R.xa2, R.xl2, a.dx_lora, B * P, train, seed,
                  false);
  if (!d_fc2) return;
  float* d_grn = a.d4a;
  if (g.dropout) {
    ops_.dropout_forward(a.d4b, a.d4a, k.dropout, site_seed(seed, 3 * d, 1), n4);
    d_grn = a.d4b;
  }
  float* d_u1 = d_grn == a.d4a ? a.d4b : a.d4a;
  ops_.zero(d_u1, n4);
  ops_.gelu_grn_backward(d_u1, d_grn, saved(R.u1), L.grn_gamma, B, P, 4 * c, kGrnEps);
  linear_backward(*L.fc1, below ? a.dc2 : nullptr, d_u1, saved(R.n), R.xa1, R.xl1, a.dx_lora, B * P, train, seed,
                  false);
  if (!below) return;
  ops_.zero(a.dc1, B * P * c);
  ops_.layernorm_backward(a.dc1, a.dc2, R.dw, R.mean, R.rstd, B * P, c);
  ops_.depthwise_conv3x3_backward(g.ds, nullptr, nullptr, a.dc1, a.stream[3 * d], L.depthwise_w, B, g.s.H, g.s.W, c);
  // ds: d stream[3d]
}

int64_t Prior::lowest_adapter_stage() const {
  for (int64_t d = 0; d < config_.depth; ++d) {
    const Block& L = blocks_[d];
    if (L.fc1->lora || L.fc2->lora) return 3 * d;
    if (L.mapper->lora) return 3 * d + 1;
    for (const Linear* l : {L.kv_mapper, L.to_q, L.to_k, L.to_v, L.to_out})
      if (l->lora) return 3 * d + 2;
  }
  return 3 * config_.depth;  // no adapter
}

void Prior::forward(float* out, const float* x, const float* r, const float* clip, const StepShape& s, bool train,
                    uint64_t seed) {
  resolve_parameters();
  plan(s, false);
  const PriorConfig& k = config_;
  const int64_t P = s.H * s.W;
  ops_.upload(acts_->x_in, x, s.B * k.c_in * P);
  std::vector<float> emb(s.B * k.c_r);
  r_embedding(emb.data(), r, s.B, k.c_r);
  ops_.upload(acts_->r_embed, emb.data(), s.B * k.c_r);
  ops_.upload(acts_->clip, clip, s.B * s.T * k.c_cond);
  run_forward(s, train, seed);
  ops_.download(out, acts_->out, s.B * k.c_in * P);
}

double Prior::loss_and_grad(const float* x, const float* r, const float* clip, const float* target, const StepShape& s,
                            uint64_t seed, bool accumulate, bool train, float loss_scale, Collective* sync,
                            int64_t bucket_bytes) {
  if (lora_layers_.empty()) throw std::logic_error("loss_and_grad needs LoRA adapters: call enable_lora first");
  resolve_parameters();
  plan(s, true);
  const PriorConfig& k = config_;
  const int64_t P = s.H * s.W, n = s.B * k.c_in * P;
  ops_.upload(acts_->x_in, x, n);
  std::vector<float> emb(s.B * k.c_r);
  r_embedding(emb.data(), r, s.B, k.c_r);
  ops_.upload(acts_->r_embed, emb.data(), s.B * k.c_r);
  ops_.upload(acts_->clip, clip, s.B * s.T * k.c_cond);
  ops_.upload(acts_->target, target, n);
  if (!accumulate)
    for (Linear* l : lora_layers_) {
      ops_.zero(l->lora->dA, lora_config_.rank * l->in);
      ops_.zero(l->lora->dB, l->out * lora_config_.rank);
    }
  run_forward(s, train, seed);
  ops_.zero(acts_->dout, n);
  const double loss = ops_.mse_loss(acts_->dout, acts_->out, acts_->target, n, loss_scale);
  const bool overlap = sync && sync->device_memory() == !ops_.host_memory();
  if (overlap) {
    plan_buckets(bucket_bytes);
    buckets_.begin(*sync);
  }
  try {
    run_backward(s, train, seed);
  } catch (...) {
    // The sums already started stay with the collective; a failed process ends the run.
    buckets_ = GradientBuckets();
    throw;
  }
  if (overlap)
    buckets_.finish();
  else if (sync)
    allreduce_grads(*sync);
  return loss;
}

void Prior::plan_buckets(int64_t bucket_bytes) {
  if (buckets_.size() > 0 && buckets_.cap_bytes() == bucket_bytes) return;
  std::vector<GradientBuckets::Slice> slices;
  for (size_t i = 0; i < lora_layers_.size(); ++i) {
    float* end = i + 1 < lora_layers_.size() ? lora_layers_[i + 1]->lora->dA : lora_grads_ + lora_grads_n_;
    float* begin = lora_layers_[i]->lora->dA;
    slices.push_back({begin, end - begin});
  }
  buckets_.plan(slices, bucket_bytes);
}

void Prior::allreduce_grads(Collective& collective) {
  if (!lora_grads_) throw std::logic_error("allreduce_grads needs LoRA adapters: call enable_lora first");
  if (collective.device_memory() != !ops_.host_memory()) {
    std::vector<float> host(lora_grads_n_);  // (lora_grads_n_)
    ops_.download(host.data(), lora_grads_, lora_grads_n_);
    collective.allreduce_sum(host.data(), lora_grads_n_);
    ops_.upload(lora_grads_, host.data(), lora_grads_n_);
    return;
  }
  collective.allreduce_sum(lora_grads_, lora_grads_n_);
}

double Prior::optimizer_step(float lr, float beta1, float beta2, float eps, float weight_decay, double max_norm,
                             int64_t step, float inv_loss_scale) {
  std::vector<float*> grads;
  std::vector<int64_t> sizes;
  std::vector<Ops::AdamWTensor> tensors;
  for (Linear* l : lora_layers_) {
    LoraTensors& t = *l->lora;
    const int64_t na = lora_config_.rank * l->in, nb = l->out * lora_config_.rank;
    grads.push_back(t.dA);
    sizes.push_back(na);
    grads.push_back(t.dB);
    sizes.push_back(nb);
    tensors.push_back({t.A, t.mA, t.vA, t.dA, na});
    tensors.push_back({t.B, t.mB, t.vB, t.dB, nb});
  }
  // The norm pass only measures; unscaling and clipping happen as AdamW reads each gradient.
  const double norm =
      ops_.clip_grad_norm(grads.data(), sizes.data(), static_cast<int64_t>(grads.size()), 0.0) * inv_loss_scale;
  if (!std::isfinite(norm)) return norm;
  // torch.nn.utils.clip_grad_norm_'s coefficient, applied in fp32 as it multiplies in place.
  const double coef = max_norm > 0.0 ? std::min(1.0, max_norm / (norm + 1e-6)) : 1.0;
  const float grad_scale = coef < 1.0 ? static_cast<float>(coef) * inv_loss_scale : inv_loss_scale;
  ops_.adamw(tensors.data(), static_cast<int64_t>(tensors.size()), lr, beta1, beta2, eps, weight_decay, step,
             grad_scale);
  return norm;
}

}  // namespace lt
