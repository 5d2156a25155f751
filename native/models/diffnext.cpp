#include "diffnext.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "timestep.h"

namespace lt {

namespace {

constexpr float kLnEps = 1e-6f;
constexpr float kGrnEps = 1e-6f;
constexpr double kOutputEps = 1e-3;

// PyTorch's antialiased bicubic filter (Keys, a = -0.5).
double aa_cubic(double x) {
  constexpr double a = -0.5;
  x = std::abs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
  return 0.0;
}

// M (out, in): interpolate(mode="bicubic", antialias=True, align_corners=True) along one axis as
// PyTorch computes its weights: scale (in - 1) / (out - 1), the filter widened by the scale when
// it shrinks, centres at scale * (i + 0.5), each row normalised.
std::vector<double> aa_bicubic_weights(int64_t in, int64_t out) {
  const double scale = out > 1 ? static_cast<double>(in - 1) / static_cast<double>(out - 1) : 0.0;
  const double support = scale >= 1.0 ? 2.0 * scale : 2.0, inv = scale >= 1.0 ? 1.0 / scale : 1.0;
  std::vector<double> m(out * in, 0.0);
  for (int64_t i = 0; i < out; ++i) {
    const double center = scale * (static_cast<double>(i) + 0.5);
    const int64_t lo = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0),
                  hi = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in);
    double total = 0.0;
    for (int64_t j = lo; j < hi; ++j) total += m[i * in + j] = aa_cubic((static_cast<double>(j) - center + 0.5) * inv);
    if (total != 0.0)
      for (int64_t j = lo; j < hi; ++j) m[i * in + j] /= total;
  }
  return m;
}

// out (B, h, w, C) channels last = x (B, C, He, We) resized to (h, w) as above.
std::vector<float> resize_channels_last(const float* x, int64_t B, int64_t C, int64_t He, int64_t We, int64_t h,
                                        int64_t w) {
  const std::vector<double> my = aa_bicubic_weights(He, h), mx = aa_bicubic_weights(We, w);
  std::vector<float> out(B * h * w * C);
  std::vector<double> rows(h * We);  // (h, We): one channel resized along y
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c) {
      const float* src = x + (b * C + c) * He * We;
      std::fill(rows.begin(), rows.end(), 0.0);
      for (int64_t i = 0; i < h; ++i)
        for (int64_t k = 0; k < He; ++k)
          if (const double wt = my[i * He + k]; wt != 0.0)
            for (int64_t j = 0; j < We; ++j) rows[i * We + j] += wt * src[k * We + j];
      for (int64_t i = 0; i < h; ++i)
        for (int64_t j = 0; j < w; ++j) {
          double v = 0.0;
          for (int64_t k = 0; k < We; ++k) v += mx[j * We + k] * rows[i * We + k];
          out[((b * h + i) * w + j) * C + c] = static_cast<float>(v);
        }
    }
  return out;
}

}  // namespace

void DiffNeXt::add_linear(const std::string& name, int64_t in, int64_t out) {
  params_.add(name + ".weight", {out, in}, config_.weight_type);
  params_.add(name + ".bias", {out});
}

void DiffNeXt::add_module(std::vector<Module>& list, char type, const std::string& name, int64_t c, int64_t c_skip,
                          int64_t nhead) {
  const DiffNeXtConfig& k = config_;
  switch (type) {
    case 'C':
      params_.add(name + ".depthwise.weight", {c, 1, k.kernel_size, k.kernel_size});
      params_.add(name + ".depthwise.bias", {c});
      add_linear(name + ".channelwise.0", c + c_skip, 4 * c);
      params_.add(name + ".channelwise.2.gamma", {1, 1, 1, 4 * c});
      params_.add(name + ".channelwise.2.beta", {1, 1, 1, 4 * c});
      add_linear(name + ".channelwise.4", 4 * c, c);
      list.push_back({Module::kRes, name, c, c_skip, 0, c});
      return;
    case 'T':
      add_linear(name + ".mapper", k.c_r, 2 * c);
      list.push_back({Module::kTimestep, name, c, 0, 0, c});
      return;
    case 'A':
      if (nhead < 1 || c % nhead)
        throw std::invalid_argument("decoder config: " + name + " has " + std::to_string(c) +
                                    " channels, not divisible by nhead " + std::to_string(nhead));
      add_linear(name + ".kv_mapper.1", k.c_cond, c);
      for (const char* p : {"to_q", "to_k", "to_v", "to_out.0"}) add_linear(name + ".attention." + p, c, c);
      list.push_back({Module::kAttn, name, c, 0, nhead, c});
      return;
    default:
      throw std::invalid_argument(std::string("decoder config: block type '") + type + "' is not C, T or A");
  }
}

DiffNeXt::DiffNeXt(Ops& ops, const DiffNeXtConfig& config) : ops_(ops), config_(config), params_(ops), arena_(ops) {
  const DiffNeXtConfig& k = config_;
  const size_t n = k.c_hidden.size();
  if (n < 1 || k.nhead.size() != n || k.blocks.size() != n || k.level_config.size() != n || k.inject_effnet.size() != n)
    throw std::invalid_argument(
        "decoder config: c_hidden, nhead, blocks, level_config and inject_effnet differ in length");
  if (k.kernel_size % 2 == 0 || k.kernel_size > 15)
    throw std::invalid_argument("decoder config: kernel_size must be odd and at most 15");
  if (k.c_in != k.c_out)
    throw std::invalid_argument("decoder config: c_in and c_out must be equal (the output is (x - a) / b)");
  add_linear("clip_mapper", k.clip_embd, k.c_cond);
  for (size_t m = 0; m < 2 * n; ++m)
    if (k.inject_effnet[m < n ? m : 2 * n - 1 - m]) {
      params_.add("effnet_mappers." + std::to_string(m) + ".weight", {k.c_cond, k.effnet_embd, 1, 1});
      params_.add("effnet_mappers." + std::to_string(m) + ".bias", {k.c_cond});
    }
  params_.add("embedding.1.weight", {k.c_hidden[0], k.c_in * k.patch_size * k.patch_size, 1, 1});
  params_.add("embedding.1.bias", {k.c_hidden[0]});
  for (size_t i = 0; i < n; ++i) {
    Level level{{}, k.inject_effnet[i] ? static_cast<int64_t>(i) : -1};
    const std::string prefix = "down_blocks." + std::to_string(i) + ".";
    int64_t index = 0;
    if (i > 0) {
      params_.add(prefix + "0.1.weight", {k.c_hidden[i], k.c_hidden[i - 1], 2, 2}, k.weight_type);
      params_.add(prefix + "0.1.bias", {k.c_hidden[i]});
      level.modules.push_back({Module::kDown, prefix + "0.1", k.c_hidden[i - 1], 0, 0, k.c_hidden[i]});
      index = 1;
    }
    for (int64_t b = 0; b < k.blocks[i]; ++b)
      for (char type : k.level_config[i])
        add_module(level.modules, type, prefix + std::to_string(index++), k.c_hidden[i],
                   k.inject_effnet[i] ? k.c_cond : 0, k.nhead[i]);
    down_.push_back(std::move(level));
  }
  for (size_t i = 0; i < n; ++i) {
    const size_t L = n - 1 - i;
    Level level{{}, k.inject_effnet[L] ? static_cast<int64_t>(n + i) : -1};
    const std::string prefix = "up_blocks." + std::to_string(i) + ".";
    int64_t index = 0;
    for (int64_t j = 0; j < k.blocks[L]; ++j)
      for (size_t t = 0; t < k.level_config[L].size(); ++t) {
        const int64_t c_skip =
            (L < n - 1 && j == 0 && t == 0 ? k.c_hidden[L] : 0) + (k.inject_effnet[L] ? k.c_cond : 0);
        add_module(level.modules, k.level_config[L][t], prefix + std::to_string(index++), k.c_hidden[L], c_skip,
                   k.nhead[L]);
      }
    if (L > 0) {
      const std::string name = prefix + std::to_string(index) + ".1";
      params_.add(name + ".weight", {k.c_hidden[L], k.c_hidden[L - 1], 2, 2});
      params_.add(name + ".bias", {k.c_hidden[L - 1]});
      level.modules.push_back({Module::kUp, name, k.c_hidden[L], 0, 0, k.c_hidden[L - 1]});
    }
    up_.push_back(std::move(level));
  }
  params_.add("clf.1.weight", {2 * k.c_out * k.patch_size * k.patch_size, k.c_hidden[0], 1, 1});
  params_.add("clf.1.bias", {2 * k.c_out * k.patch_size * k.patch_size});
}

void DiffNeXt::resolve(Module& m) {
  auto P = [&](const std::string& s) -> const float* { return params_.get(m.name + s); };
  auto L = [&](const std::string& s) { return Linear{params_.ref(m.name + s + ".weight"), P(s + ".bias")}; };
  switch (m.kind) {
    case Module::kRes:
      m.depthwise_w = P(".depthwise.weight");
      m.depthwise_b = P(".depthwise.bias");
      m.fc1 = L(".channelwise.0");
      m.grn_gamma = P(".channelwise.2.gamma");
      m.grn_beta = P(".channelwise.2.beta");
      m.fc2 = L(".channelwise.4");
      return;
    case Module::kTimestep:
      m.mapper = L(".mapper");
      return;
    case Module::kAttn:
      m.kv = L(".kv_mapper.1");
      m.q = L(".attention.to_q");
      m.k = L(".attention.to_k");
      m.v = L(".attention.to_v");
      m.out = L(".attention.to_out.0");
      return;
    case Module::kDown:
      m.scaler = L("");
      return;
    case Module::kUp:
      m.conv_w = P(".weight");
      m.conv_b = P(".bias");
      return;
  }
}

void DiffNeXt::resolve() {
  if (resolved_generation_ == params_.generation()) return;
  auto linear = [&](const std::string& name) {
    return Linear{params_.ref(name + ".weight"), params_.get(name + ".bias")};
  };
  clip_mapper_ = linear("clip_mapper");
  embedding_ = linear("embedding.1");
  clf_ = linear("clf.1");
  const size_t n = config_.c_hidden.size();
  effnet_mappers_.assign(2 * n, Linear{});
  for (const auto& levels : {&down_, &up_})
    for (Level& level : *levels) {
      if (level.mapper >= 0) effnet_mappers_[level.mapper] = linear("effnet_mappers." + std::to_string(level.mapper));
      for (Module& m : level.modules) resolve(m);
    }
  resolved_generation_ = params_.generation();
}

// Every buffer sized for the largest level that uses it, the conditioning's per level and per
// attention module.
void DiffNeXt::plan(const Shape& s) {
  if (!arena_.empty() && s == planned_) return;
  const DiffNeXtConfig& k = config_;
  const int64_t n = static_cast<int64_t>(k.c_hidden.size()), p = k.patch_size, B = s.B;
  const int64_t h0 = s.H / p, w0 = s.W / p, P0 = h0 * w0;
  auto pixels = [&](int64_t l) { return (h0 >> l) * (w0 >> l); };
  int64_t stream = 0, cat = 0, wide = 0, src = 0, heads = 0, skip_cat = 0, c_max = 0;
  for (const auto& levels : {&down_, &up_})
    for (size_t i = 0; i < levels->size(); ++i) {
      const int64_t l = levels == &down_ ? static_cast<int64_t>(i) : n - 1 - static_cast<int64_t>(i), P = pixels(l);
      for (const Module& m : (*levels)[i].modules) {
        stream = std::max(stream, B * P * m.c);
        cat = std::max(cat, B * P * (m.c + m.c_skip));
        wide = std::max(wide, B * P * 4 * m.c);
        c_max = std::max(c_max, m.c);
        if (m.kind == Module::kAttn) {
          src = std::max(src, B * (P + s.T) * m.c);
          heads = std::max(heads, B * m.nhead * P);
        }
      }
      if (levels == &up_ && l < n - 1 && k.inject_effnet[l])
        skip_cat = std::max(skip_cat, B * P * (k.c_hidden[l] + k.c_cond));
    }
  buf_ = Buffers{};
  ArenaLayout a;
  for (float** b : {&buf_.x, &buf_.t, &buf_.u, &buf_.q, &buf_.o}) a.take(*b, stream);
  a.take(buf_.cat, cat);
  a.take(buf_.hidden, wide);
  a.take(buf_.hidden2, wide);
  for (float** b : {&buf_.src, &buf_.k, &buf_.v}) a.take(*b, src);
  a.take(buf_.lse, heads);
  a.take(buf_.mean, B * std::max(P0, s.T));
  a.take(buf_.rstd, B * std::max(P0, s.T));
  a.take(buf_.ab, B * 2 * c_max);
  a.take(buf_.patches, B * P0 * k.c_in * p * p);
  a.take(buf_.r_embed, B * k.c_r);
  buf_.level_out.assign(n, nullptr);
  for (int64_t l = 0; l < n; ++l) a.take(buf_.level_out[l], B * pixels(l) * k.c_hidden[l]);
  a.take(buf_.skip_cat, skip_cat);
  a.take(buf_.clf, B * P0 * 2 * k.c_out * p * p);
  buf_.effnet_in.assign(n, nullptr);
  buf_.effnet_mapped.assign(2 * n, nullptr);
  for (int64_t l = 0; l < n; ++l)
    if (k.inject_effnet[l]) {
      a.take(buf_.effnet_in[l], B * pixels(l) * k.effnet_embd);
      a.take(buf_.effnet_mapped[down_[l].mapper], B * pixels(l) * k.c_cond);
      a.take(buf_.effnet_mapped[up_[n - 1 - l].mapper], B * pixels(l) * k.c_cond);
    }
  a.take(buf_.clip_in, B * s.T * k.clip_embd);
  a.take(buf_.clip_mapped, B * s.T * k.c_cond);
  a.take(buf_.silu_clip, B * s.T * k.c_cond);
  for (const auto& levels : {&down_, &up_})
    for (Level& level : *levels)
      for (Module& m : level.modules)
        if (m.kind == Module::kAttn) a.take(m.keys_values, B * s.T * m.c);
  arena_.allocate(a);
  planned_ = s;
  conditioned_version_ = ~uint64_t{0};  // the kept conditioning went with the old arena
}

// The work that depends only on effnet and clip: each level's resized effnet through its
// mappers, the text through clip_mapper, LayerNorm and SiLU, then every attention's kv_mapper.
void DiffNeXt::condition(const float* effnet, const float* clip) {
  const DiffNeXtConfig& k = config_;
  const Shape& s = planned_;
  const int64_t n = static_cast<int64_t>(k.c_hidden.size()), B = s.B, T = s.T;
  const int64_t effnet_n = B * k.effnet_embd * s.He * s.We, clip_n = B * T * k.clip_embd;
  if (conditioned_version_ == params_.version() && std::equal(effnet, effnet + effnet_n, conditioned_effnet_.begin()) &&
      std::equal(clip, clip + clip_n, conditioned_clip_.begin()))
    return;
  const int64_t h0 = s.H / k.patch_size, w0 = s.W / k.patch_size;
  for (int64_t l = 0; l < n; ++l) {
    if (!k.inject_effnet[l]) continue;
    const int64_t hl = h0 >> l, wl = w0 >> l, rows = B * hl * wl;
    const std::vector<float> resized = resize_channels_last(effnet, B, k.effnet_embd, s.He, s.We, hl, wl);
    ops_.upload(buf_.effnet_in[l], resized.data(), rows * k.effnet_embd);
    for (int64_t mapper : {down_[l].mapper, up_[n - 1 - l].mapper}) {
      const Linear& m = effnet_mappers_[mapper];
      ops_.linear_forward(buf_.effnet_mapped[mapper], buf_.effnet_in[l], m.w, m.b, rows, k.effnet_embd, k.c_cond);
    }
  }
  ops_.upload(buf_.clip_in, clip, clip_n);
  ops_.linear_forward(buf_.clip_mapped, buf_.clip_in, clip_mapper_.w, clip_mapper_.b, B * T, k.clip_embd, k.c_cond);
  ops_.layernorm_forward(buf_.silu_clip, buf_.mean, buf_.rstd, buf_.clip_mapped, B * T, k.c_cond, kLnEps);
  ops_.silu_forward(buf_.silu_clip, buf_.silu_clip, B * T * k.c_cond);
  for (const auto& levels : {&down_, &up_})
    for (const Level& level : *levels)
      for (const Module& m : level.modules)
        if (m.kind == Module::kAttn)
          ops_.linear_forward(m.keys_values, buf_.silu_clip, m.kv.w, m.kv.b, B * T, k.c_cond, m.c);
  conditioned_effnet_.assign(effnet, effnet + effnet_n);
  conditioned_clip_.assign(clip, clip + clip_n);
  conditioned_version_ = params_.version();
}

void DiffNeXt::run(const Module& m, int64_t B, int64_t& h, int64_t& w, const float* skip) {
  Buffers& b = buf_;
  const int64_t P = h * w, rows = B * P, c = m.c;
  const DType compute = config_.weight_type;
  switch (m.kind) {
    case Module::kRes: {
      ops_.depthwise_conv_forward(b.t, b.x, m.depthwise_w, m.depthwise_b, B, h, w, c, config_.kernel_size, 1, false,
                                  false);
      ops_.layernorm_forward(b.u, b.mean, b.rstd, b.t, rows, c, kLnEps);
      const float* in = b.u;
      if (m.c_skip) {
        ops_.concat_seq(b.cat, b.u, skip, rows, c, m.c_skip, 1);
        in = b.cat;
      }
      ops_.linear_forward(b.hidden, in, m.fc1.w, m.fc1.b, rows, c + m.c_skip, 4 * c);
      ops_.gelu_grn_forward(b.hidden2, b.hidden, m.grn_gamma, m.grn_beta, B, P, 4 * c, kGrnEps);
      ops_.linear_forward(b.t, b.hidden2, m.fc2.w, m.fc2.b, rows, 4 * c, c);
      ops_.axpy(b.x, b.t, 1.0f, rows * c);
      return;
    }
    case Module::kTimestep:
      ops_.linear_forward(b.ab, b.r_embed, m.mapper.w, m.mapper.b, B, config_.c_r, 2 * c);
      ops_.modulate_forward(b.x, b.x, b.ab, B, P, c);
      return;
    case Module::kAttn: {
      const int64_t T = planned_.T, S = P + T, d = c / m.nhead;
      ops_.layernorm_forward(b.u, b.mean, b.rstd, b.x, rows, c, kLnEps);
      ops_.concat_seq(b.src, b.u, m.keys_values, B, P, T, c);
      ops_.linear_forward(b.q, b.u, m.q.w, m.q.b, rows, c, c);
      ops_.linear_forward(b.k, b.src, m.k.w, m.k.b, B * S, c, c);
      ops_.linear_forward(b.v, b.src, m.v.w, m.v.b, B * S, c, c);
      ops_.attention_forward(b.o, b.lse, b.q, b.k, b.v, B, P, S, m.nhead, d, 1.0f / std::sqrt(static_cast<float>(d)),
                             compute);
      ops_.linear_forward(b.t, b.o, m.out.w, m.out.b, rows, c, c);
      ops_.axpy(b.x, b.t, 1.0f, rows * c);
      return;
    }
    case Module::kDown:
      ops_.layernorm_forward(b.u, b.mean, b.rstd, b.x, rows, c, kLnEps);
      ops_.pixel_unshuffle(b.t, b.u, B, h, w, c, 2);
      h /= 2, w /= 2;
      ops_.linear_forward(b.x, b.t, m.scaler.w, m.scaler.b, B * h * w, 4 * c, m.c_next);
      return;
    case Module::kUp:
      ops_.layernorm_forward(b.u, b.mean, b.rstd, b.x, rows, c, kLnEps);
      ops_.conv_transpose2d_forward(b.x, b.u, m.conv_w, m.conv_b, B, h, w, c, m.c_next, 2, 2, 0);
      h *= 2, w *= 2;
      return;
  }
}

void DiffNeXt::forward(float* out, const float* x, const float* r, const float* effnet, const float* clip, int64_t B,
                       int64_t H, int64_t W, int64_t He, int64_t We, int64_t T) {
  const DiffNeXtConfig& k = config_;
  const int64_t n = static_cast<int64_t>(k.c_hidden.size()), p = k.patch_size;
  if (H % side_multiple() || W % side_multiple())
    throw std::invalid_argument("decoder: latent sides must be multiples of " + std::to_string(side_multiple()) +
                                ", got " + std::to_string(H) + "x" + std::to_string(W));
  resolve();
  plan({B, H, W, He, We, T});
  condition(effnet, clip);
  Buffers& b = buf_;
  const int64_t h0 = H / p, w0 = W / p, cp = k.c_in * p * p;

  // The patches (PixelUnshuffle, channels last) and the timestep embedding, from the host.
  std::vector<float> host(B * h0 * w0 * cp);  // (B, h0, w0, c_in p p)
  for (int64_t bi = 0; bi < B; ++bi)
    for (int64_t c = 0; c < k.c_in; ++c)
      for (int64_t y = 0; y < H; ++y)
        for (int64_t xx = 0; xx < W; ++xx)
          host[((bi * h0 + y / p) * w0 + xx / p) * cp + (c * p + y % p) * p + xx % p] =
              x[((bi * k.c_in + c) * H + y) * W + xx];
  ops_.upload(b.patches, host.data(), B * h0 * w0 * cp);
  std::vector<float> emb(B * k.c_r);
  r_embedding(emb.data(), r, B, k.c_r);
  ops_.upload(b.r_embed, emb.data(), B * k.c_r);

  ops_.linear_forward(b.t, b.patches, embedding_.w, embedding_.b, B * h0 * w0, cp, k.c_hidden[0]);
  ops_.layernorm_forward(b.x, b.mean, b.rstd, b.t, B * h0 * w0, k.c_hidden[0], kLnEps);
  int64_t h = h0, w = w0;
  for (int64_t l = 0; l < n; ++l) {
    const Level& level = down_[l];
    for (const Module& m : level.modules) run(m, B, h, w, level.mapper >= 0 ? b.effnet_mapped[level.mapper] : nullptr);
    const int64_t size = B * h * w * k.c_hidden[l];
    ops_.convert(b.level_out[l], DType::f32, b.x, size);
  }
  // Up from the deepest level (its output is still in x). The first ResBlock of every level but
  // the deepest also takes that level's down output, before the effnet channels.
  for (int64_t i = 0; i < n; ++i) {
    const int64_t L = n - 1 - i, c_effnet = k.inject_effnet[L] ? k.c_cond : 0;
    const Level& level = up_[i];
    const float* effnet_c = level.mapper >= 0 ? b.effnet_mapped[level.mapper] : nullptr;
    for (const Module& m : level.modules) {
      const float* skip = effnet_c;
      if (m.kind == Module::kRes && m.c_skip > c_effnet) {
        skip = b.level_out[L];
        if (c_effnet) {
          ops_.concat_seq(b.skip_cat, b.level_out[L], effnet_c, B * h * w, k.c_hidden[L], c_effnet, 1);
          skip = b.skip_cat;
        }
      }
      run(m, B, h, w, skip);
    }
  }

  const int64_t rows = B * h0 * w0, shuffled = 2 * k.c_out * p * p;
  ops_.layernorm_forward(b.u, b.mean, b.rstd, b.x, rows, k.c_hidden[0], kLnEps);
  ops_.linear_forward(b.clf, b.u, clf_.w, clf_.b, rows, k.c_hidden[0], shuffled);
  std::vector<float> y(rows * shuffled);  // (B, h0, w0, 2 c_out p p)
  ops_.download(y.data(), b.clf, rows * shuffled);
  // PixelShuffle(p) gives (B, 2 c_out, H, W) = [a | b]; the noise is (x - a) / b with b squashed
  // into (eps, 1 - eps).
  auto shuffled_at = [&](int64_t bi, int64_t c, int64_t yy, int64_t xx) {
    return static_cast<double>(y[((bi * h0 + yy / p) * w0 + xx / p) * shuffled + (c * p + yy % p) * p + xx % p]);
  };
  for (int64_t bi = 0; bi < B; ++bi)
    for (int64_t c = 0; c < k.c_out; ++c)
      for (int64_t yy = 0; yy < H; ++yy)
        for (int64_t xx = 0; xx < W; ++xx) {
          const double a = shuffled_at(bi, c, yy, xx), s = shuffled_at(bi, k.c_out + c, yy, xx);
          const double squashed = (1.0 - 2.0 * kOutputEps) / (1.0 + std::exp(-s)) + kOutputEps;
          const int64_t at = ((bi * k.c_out + c) * H + yy) * W + xx;
          out[at] = static_cast<float>((static_cast<double>(x[at]) - a) / squashed);
        }
}

}  // namespace lt
