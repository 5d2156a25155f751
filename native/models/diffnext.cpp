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
  params_.add(name + ".weight", {out, in});
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

DiffNeXt::DiffNeXt(Ops& ops, const DiffNeXtConfig& config) : ops_(ops), config_(config), params_(ops) {
  const DiffNeXtConfig& k = config_;
  const size_t n = k.c_hidden.size();
  if (n < 1 || k.nhead.size() != n || k.blocks.size() != n || k.level_config.size() != n || k.inject_effnet.size() != n)
    throw std::invalid_argument(
        "decoder config: c_hidden, nhead, blocks, level_config and inject_effnet differ in length");
  if (k.kernel_size % 2 == 0) throw std::invalid_argument("decoder config: kernel_size must be odd");
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
      params_.add(prefix + "0.1.weight", {k.c_hidden[i], k.c_hidden[i - 1], 2, 2});
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

// Device buffers of one forward, each sized for the largest level that uses it.
struct DiffNeXt::Buffers {
  float *x, *t, *u, *cat, *hidden, *hidden2;  // (B, P, c), (B, P, c + c_skip), (B, P, 4c)
  float *q, *o, *src, *k, *v, *lse;           // (B, P, c), (B, P + T, c), (B, nhead, P)
  float *mean, *rstd, *ab;                    // (B, P), (B, 2c)
  float *r_embed, *silu_clip, *kv;            // (B, c_r), (B, T, c_cond), (B, T, c)
  int64_t T;
};

void DiffNeXt::run(const Module& m, Buffers& buf, int64_t B, int64_t& h, int64_t& w, const float* skip) {
  const int64_t P = h * w, rows = B * P, c = m.c;
  auto P_ = [&](const std::string& s) { return params_.get(m.name + s); };
  switch (m.kind) {
    case Module::kRes: {
      const int64_t kk = config_.kernel_size;
      ops_.depthwise_conv_forward(buf.t, buf.x, P_(".depthwise.weight"), P_(".depthwise.bias"), B, h, w, c, kk, 1,
                                  false, false);
      ops_.layernorm_forward(buf.u, buf.mean, buf.rstd, buf.t, rows, c, kLnEps);
      const float* in = buf.u;
      if (m.c_skip) {
        ops_.concat_seq(buf.cat, buf.u, skip, rows, c, m.c_skip, 1);
        in = buf.cat;
      }
      ops_.linear_forward(buf.hidden, in, P_(".channelwise.0.weight"), P_(".channelwise.0.bias"), rows, c + m.c_skip,
                          4 * c);
      ops_.gelu_grn_forward(buf.hidden2, buf.hidden, P_(".channelwise.2.gamma"), P_(".channelwise.2.beta"), B, P, 4 * c,
                            kGrnEps);
      ops_.linear_forward(buf.t, buf.hidden2, P_(".channelwise.4.weight"), P_(".channelwise.4.bias"), rows, 4 * c, c);
      ops_.axpy(buf.x, buf.t, 1.0f, rows * c);
      return;
    }
    case Module::kTimestep:
      ops_.linear_forward(buf.ab, buf.r_embed, P_(".mapper.weight"), P_(".mapper.bias"), B, config_.c_r, 2 * c);
      ops_.modulate_forward(buf.x, buf.x, buf.ab, B, P, c);
      return;
    case Module::kAttn: {
      const int64_t T = buf.T, S = P + T, d = c / m.nhead;
      ops_.linear_forward(buf.kv, buf.silu_clip, P_(".kv_mapper.1.weight"), P_(".kv_mapper.1.bias"), B * T,
                          config_.c_cond, c);
      ops_.layernorm_forward(buf.u, buf.mean, buf.rstd, buf.x, rows, c, kLnEps);
      ops_.concat_seq(buf.src, buf.u, buf.kv, B, P, T, c);
      ops_.linear_forward(buf.q, buf.u, P_(".attention.to_q.weight"), P_(".attention.to_q.bias"), rows, c, c);
      ops_.linear_forward(buf.k, buf.src, P_(".attention.to_k.weight"), P_(".attention.to_k.bias"), B * S, c, c);
      ops_.linear_forward(buf.v, buf.src, P_(".attention.to_v.weight"), P_(".attention.to_v.bias"), B * S, c, c);
      ops_.attention_forward(buf.o, buf.lse, buf.q, buf.k, buf.v, B, P, S, m.nhead, d,
                             1.0f / std::sqrt(static_cast<float>(d)), DType::f32);
      ops_.linear_forward(buf.t, buf.o, P_(".attention.to_out.0.weight"), P_(".attention.to_out.0.bias"), rows, c, c);
      ops_.axpy(buf.x, buf.t, 1.0f, rows * c);
      return;
    }
    case Module::kDown:
      ops_.layernorm_forward(buf.u, buf.mean, buf.rstd, buf.x, rows, c, kLnEps);
      ops_.pixel_unshuffle(buf.t, buf.u, B, h, w, c, 2);
      h /= 2, w /= 2;
      ops_.linear_forward(buf.x, buf.t, P_(".weight"), P_(".bias"), B * h * w, 4 * c, m.c_next);
      return;
    case Module::kUp:
      ops_.layernorm_forward(buf.u, buf.mean, buf.rstd, buf.x, rows, c, kLnEps);
      ops_.conv_transpose2d_forward(buf.x, buf.u, P_(".weight"), P_(".bias"), B, h, w, c, m.c_next, 2, 2, 0);
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
  const int64_t h0 = H / p, w0 = W / p;
  // Sizes of the largest level for each buffer.
  int64_t pc = 0, pcat = 0, p4c = 0, sc = 0, heads = 0, pixels = B * h0 * w0, c_max = 0;
  for (int64_t l = 0; l < n; ++l) {
    const int64_t P = (h0 >> l) * (w0 >> l), c = k.c_hidden[l];
    pc = std::max(pc, B * P * std::max(c, l > 0 ? k.c_hidden[l - 1] : c) * 4);  // a pixel unshuffle's 4c too
    pcat = std::max(pcat, B * P * (2 * c + k.c_cond));
    p4c = std::max(p4c, B * P * 4 * c);
    sc = std::max(sc, B * (P + T) * c);
    heads = std::max(heads, B * std::max<int64_t>(k.nhead[l], 1) * P);
    c_max = std::max(c_max, c);
  }
  Scratch scratch(ops_);
  Buffers buf{};
  for (float** b : {&buf.x, &buf.t, &buf.u, &buf.q, &buf.o}) *b = scratch.alloc(pc);
  buf.cat = scratch.alloc(pcat);
  buf.hidden = scratch.alloc(p4c);
  buf.hidden2 = scratch.alloc(p4c);
  for (float** b : {&buf.src, &buf.k, &buf.v}) *b = scratch.alloc(sc);
  buf.lse = scratch.alloc(heads);
  buf.mean = scratch.alloc(pixels);
  buf.rstd = scratch.alloc(pixels);
  buf.ab = scratch.alloc(B * 2 * c_max);
  buf.r_embed = scratch.alloc(B * k.c_r);
  buf.silu_clip = scratch.alloc(B * T * k.c_cond);
  buf.kv = scratch.alloc(B * T * c_max);
  buf.T = T;

  // Host inputs: the patches (PixelUnshuffle, channels last), the timestep embedding, the effnet
  // embedding resized to every level.
  const int64_t cp = k.c_in * p * p;
  std::vector<float> host(B * h0 * w0 * cp);  // (B, h0, w0, c_in p p)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < k.c_in; ++c)
      for (int64_t y = 0; y < H; ++y)
        for (int64_t xx = 0; xx < W; ++xx)
          host[((b * h0 + y / p) * w0 + xx / p) * cp + (c * p + y % p) * p + xx % p] =
              x[((b * k.c_in + c) * H + y) * W + xx];
  float* patches = scratch.alloc(B * h0 * w0 * cp);
  ops_.upload(patches, host.data(), B * h0 * w0 * cp);
  std::vector<float> emb(B * k.c_r);
  r_embedding(emb.data(), r, B, k.c_r);
  ops_.upload(buf.r_embed, emb.data(), B * k.c_r);
  std::vector<float*> effnet_at(n, nullptr);  // (B, h_l, w_l, effnet_embd)
  float* effnet_c = scratch.alloc(B * h0 * w0 * k.c_cond);
  for (int64_t l = 0; l < n; ++l)
    if (k.inject_effnet[l]) {
      const int64_t hl = h0 >> l, wl = w0 >> l;
      const std::vector<float> resized = resize_channels_last(effnet, B, k.effnet_embd, He, We, hl, wl);
      effnet_at[l] = scratch.alloc(B * hl * wl * k.effnet_embd);
      ops_.upload(effnet_at[l], resized.data(), B * hl * wl * k.effnet_embd);
    }
  auto map_effnet = [&](int64_t mapper, int64_t l) {
    const std::string name = "effnet_mappers." + std::to_string(mapper);
    ops_.linear_forward(effnet_c, effnet_at[l], params_.get(name + ".weight"), params_.get(name + ".bias"),
                        B * (h0 >> l) * (w0 >> l), k.effnet_embd, k.c_cond);
  };

  // The text conditioning: LayerNorm(clip_mapper(clip)), then SiLU as every kv_mapper takes it.
  float* clip_in = scratch.alloc(B * T * std::max(k.clip_embd, k.c_cond));
  ops_.upload(clip_in, clip, B * T * k.clip_embd);
  ops_.linear_forward(buf.t, clip_in, params_.get("clip_mapper.weight"), params_.get("clip_mapper.bias"), B * T,
                      k.clip_embd, k.c_cond);
  ops_.layernorm_forward(clip_in, buf.mean, buf.rstd, buf.t, B * T, k.c_cond, kLnEps);
  ops_.silu_forward(buf.silu_clip, clip_in, B * T * k.c_cond);

  ops_.linear_forward(buf.t, patches, params_.get("embedding.1.weight"), params_.get("embedding.1.bias"), B * h0 * w0,
                      cp, k.c_hidden[0]);
  ops_.layernorm_forward(buf.x, buf.mean, buf.rstd, buf.t, B * h0 * w0, k.c_hidden[0], kLnEps);

  int64_t h = h0, w = w0;
  std::vector<float*> level_out(n);  // (B, h_l, w_l, c_l): each down level's output
  for (int64_t l = 0; l < n; ++l) {
    const Level& level = down_[l];
    if (level.mapper >= 0) map_effnet(level.mapper, l);
    for (const Module& m : level.modules) run(m, buf, B, h, w, effnet_c);
    const int64_t size = B * h * w * k.c_hidden[l];
    level_out[l] = scratch.alloc(size);
    ops_.zero(level_out[l], size);
    ops_.axpy(level_out[l], buf.x, 1.0f, size);
  }
  // Up from the deepest level (its output is still in x). The first ResBlock of every level but
  // the deepest also takes that level's down output, before the effnet channels.
  float* skip_cat = scratch.alloc(pcat);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t L = n - 1 - i, c_effnet = k.inject_effnet[L] ? k.c_cond : 0;
    const Level& level = up_[i];
    if (level.mapper >= 0) map_effnet(level.mapper, L);
    for (const Module& m : level.modules) {
      const float* skip = c_effnet ? effnet_c : nullptr;
      if (m.kind == Module::kRes && m.c_skip > c_effnet) {
        skip = level_out[L];
        if (c_effnet) {
          ops_.concat_seq(skip_cat, level_out[L], effnet_c, B * h * w, k.c_hidden[L], c_effnet, 1);
          skip = skip_cat;
        }
      }
      run(m, buf, B, h, w, skip);
    }
  }

  const int64_t rows = B * h0 * w0, shuffled = 2 * k.c_out * p * p;
  float* clf = scratch.alloc(rows * shuffled);
  ops_.layernorm_forward(buf.u, buf.mean, buf.rstd, buf.x, rows, k.c_hidden[0], kLnEps);
  ops_.linear_forward(clf, buf.u, params_.get("clf.1.weight"), params_.get("clf.1.bias"), rows, k.c_hidden[0],
                      shuffled);
  std::vector<float> y(rows * shuffled);  // (B, h0, w0, 2 c_out p p)
  ops_.download(y.data(), clf, rows * shuffled);
  // PixelShuffle(p) gives (B, 2 c_out, H, W) = [a | b]; the noise is (x - a) / b with b squashed
  // into (eps, 1 - eps).
  auto shuffled_at = [&](int64_t b, int64_t c, int64_t yy, int64_t xx) {
    return static_cast<double>(y[((b * h0 + yy / p) * w0 + xx / p) * shuffled + (c * p + yy % p) * p + xx % p]);
  };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < k.c_out; ++c)
      for (int64_t yy = 0; yy < H; ++yy)
        for (int64_t xx = 0; xx < W; ++xx) {
          const double a = shuffled_at(b, c, yy, xx), s = shuffled_at(b, k.c_out + c, yy, xx);
          const double squashed = (1.0 - 2.0 * kOutputEps) / (1.0 + std::exp(-s)) + kOutputEps;
          const int64_t at = ((b * k.c_out + c) * H + yy) * W + xx;
          out[at] = static_cast<float>((static_cast<double>(x[at]) - a) / squashed);
        }
}

}  // namespace lt
