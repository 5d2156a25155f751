"""Writes tests/fixtures/ops.safetensors: inputs, outputs and gradients of every CPU op,
computed by PyTorch in float64 from float32 inputs, so the native fp32 results are compared
against the exact answer. Run: python3 tests/reference/ops_fixtures.py (needs torch)."""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from common import randn, write_safetensors  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "ops.safetensors")
gen = torch.Generator().manual_seed(1234)
tensors = {}
cases = []


def case(op, name, params, **arrays):
    cid = f"{op}.{name}"
    cases.append({"op": op, "id": cid, **params})
    for key, value in arrays.items():
        tensors[f"{cid}.{key}"] = value


def leaf(*shape, scale=1.0):
    return randn(gen, *shape, scale=scale).requires_grad_(True)


# ---- GEMM: tile-aligned, ragged, size-1 and K-blocked sizes, every transpose ----------------
for (M, N, K) in [(1, 1, 1), (7, 13, 5), (12, 32, 256), (37, 70, 129), (100, 33, 300), (13, 1, 17), (1, 45, 3), (130, 257, 64), (50, 20, 600)]:
    for ta in (False, True):
        for tb in (False, True):
            a = randn(gen, K, M) if ta else randn(gen, M, K)
            b = randn(gen, N, K) if tb else randn(gen, K, N)
            c = (a.t() if ta else a) @ (b.t() if tb else b)
            case("gemm", f"{M}x{N}x{K}.{int(ta)}{int(tb)}", {"M": M, "N": N, "K": K, "transA": ta, "transB": tb, "alpha": 1.0, "beta": 0.0}, A=a, B=b, C=c)
a, b, c0 = randn(gen, 33, 19), randn(gen, 19, 41), randn(gen, 33, 41)
case("gemm", "alpha_beta", {"M": 33, "N": 41, "K": 19, "transA": False, "transB": False, "alpha": 0.5, "beta": -2.0}, A=a, B=b, C0=c0, C=0.5 * (a @ b) - 2.0 * c0)

# ---- Linear and LoRA linear -----------------------------------------------------------------
for name, lead, fin, fout in [("3d", (2, 5), 37, 29), ("one_row", (1,), 64, 1)]:
    x, w, bias = leaf(*lead, fin), leaf(fout, fin, scale=0.2), leaf(fout)
    y = F.linear(x, w, bias)
    dy = randn(gen, *y.shape)
    y.backward(dy)
    case("linear", name, {}, x=x, W=w, b=bias, y=y, dy=dy, dx=x.grad, dW=w.grad, db=bias.grad)

for name, lead, fin, fout, r, scale in [("3d", (3, 7), 33, 17, 4, 2.0), ("rank1", (5,), 24, 40, 1, 0.5)]:
    x, w, bias = leaf(*lead, fin), leaf(fout, fin, scale=0.2), leaf(fout)
    A, B = leaf(r, fin, scale=0.3), leaf(fout, r, scale=0.3)  # B non-zero so dA is non-trivial
    xa = x @ A.t()
    y = F.linear(x, w, bias) + scale * (xa @ B.t())
    dy = randn(gen, *y.shape)
    y.backward(dy)
    case("lora_linear", name, {"scale": scale, "r": r}, x=x, W=w, b=bias, A=A, B=B, y=y, xa=xa.detach(), dy=dy,
         dx=x.grad, dA=A.grad, dB=B.grad, dW=w.grad, db=bias.grad)

# ---- Attention: ragged against the 96x128 blocks, M != N, head dims 64, 24, 17, 1 -----------
for (Bn, N, M, H, d) in [(1, 1, 1, 1, 1), (2, 37, 53, 2, 64), (1, 200, 300, 2, 64), (2, 97, 129, 3, 24), (1, 33, 7, 4, 17)]:
    q, k, v = leaf(Bn, N, H * d), leaf(Bn, M, H * d), leaf(Bn, M, H * d)
    scale = d ** -0.5

    def heads(t, L):
        return t.view(Bn, L, H, d).transpose(1, 2)

    s = heads(q, N) @ heads(k, M).transpose(-1, -2) * scale
    lse = torch.logsumexp(s, dim=-1)
    o = (torch.softmax(s, dim=-1) @ heads(v, M)).transpose(1, 2).reshape(Bn, N, H * d)
    do = randn(gen, Bn, N, H * d)
    o.backward(do)
    case("attention", f"B{Bn}_N{N}_M{M}_H{H}_d{d}", {"B": Bn, "N": N, "M": M, "H": H, "d": d}, q=q, k=k, v=v, o=o, lse=lse.detach(), do=do,
         dq=q.grad, dk=k.grad, dv=v.grad)

# ---- LayerNorm (no affine), eps as in the prior ---------------------------------------------
for name, shape, offset in [("3d", (3, 4, 37), 0.0), ("large_mean", (5, 64), 100.0), ("one", (1, 1), 0.0)]:
    x = (randn(gen, *shape) + offset).requires_grad_(True)
    y = F.layer_norm(x, shape[-1:], eps=1e-6)
    dy = randn(gen, *shape)
    y.backward(dy)
    case("layernorm", name, {"eps": 1e-6}, x=x, y=y, dy=dy, dx=x.grad)

# ---- Activations ----------------------------------------------------------------------------
x0 = torch.cat([torch.linspace(-8, 8, 997, dtype=torch.float32), torch.tensor([0.0, -0.0, 1e-7], dtype=torch.float32)]).to(torch.float64)
for kind, fn, params in [("gelu", lambda t: F.gelu(t), {}), ("silu", F.silu, {}), ("leaky_relu", lambda t: F.leaky_relu(t, 0.2), {"slope": 0.2})]:
    x = x0.clone().requires_grad_(True)
    y = fn(x)
    dy = randn(gen, *x.shape)
    y.backward(dy)
    case("activation", kind, {"kind": kind, **params}, x=x, y=y, dy=dy, dx=x.grad)

# ---- GlobalResponseNorm (diffusers' module, channels last) ----------------------------------
for name, shape in [("4d", (2, 5, 7, 24)), ("one_pixel", (1, 1, 1, 3)), ("row_blocks", (2, 5, 7, 480))]:
    C = shape[-1]
    u, gamma, beta = leaf(*shape), leaf(1, 1, 1, C), leaf(1, 1, 1, C)
    g = torch.norm(u, p=2, dim=(1, 2), keepdim=True)
    nx = g / (g.mean(dim=-1, keepdim=True) + 1e-6)
    y = gamma * (u * nx) + beta + u
    dy = randn(gen, *shape)
    y.backward(dy)
    case("grn", name, {"eps": 1e-6}, u=u, gamma=gamma, beta=beta, y=y, dy=dy, du=u.grad, dgamma=gamma.grad, dbeta=beta.grad)

# ---- Convolutions ---------------------------------------------------------------------------
for name, (Bn, H, W, C) in [("ragged", (2, 5, 7, 13)), ("one_pixel", (1, 1, 1, 4)), ("row", (1, 1, 6, 3))]:
    x, w, bias = leaf(Bn, H, W, C), leaf(C, 1, 3, 3), leaf(C)
    y = F.conv2d(x.permute(0, 3, 1, 2), w, bias, padding=1, groups=C).permute(0, 2, 3, 1)
    dy = randn(gen, *y.shape)
    y.backward(dy)
    case("depthwise", name, {}, x=x, w=w, b=bias, y=y, dy=dy, dx=x.grad, dw=w.grad, db=bias.grad)

for name, (Bn, Cin, Cout, H, W) in [("ragged", (2, 11, 7, 5, 3)), ("one", (1, 1, 1, 1, 1))]:
    x, w, bias = leaf(Bn, Cin, H, W), leaf(Cout, Cin, 1, 1), leaf(Cout)
    y = F.conv2d(x, w, bias)
    dy = randn(gen, *y.shape)
    y.backward(dy)
    case("conv1x1", name, {}, x=x, w=w, b=bias, y=y, dy=dy, dx=x.grad, dw=w.grad, db=bias.grad)

# Forward-only convolutions of the image encoder and decoder (channels last, weights as the
# native layout takes them). Shapes cover tiles read in place and gathered ones: output rows
# narrower than a register tile, ragged channel counts, stride 2 over odd sides, k 1 and 5.
def silu_if(y, silu):
    return y * torch.sigmoid(y) if silu else y


def conv2d_case(name, Bn, H, W, Cin, Cout, k, stride, silu):
    x, w, bias = randn(gen, Bn, H, W, Cin), randn(gen, Cout, Cin, k, k, scale=0.3), randn(gen, Cout)
    y = F.conv2d(x.double().permute(0, 3, 1, 2), w.double(), bias.double(), stride=stride, padding=k // 2)
    y = silu_if(y, silu).permute(0, 2, 3, 1)
    case("conv2d", name, {"stride": stride, "silu": silu}, x=x, w=w.permute(0, 2, 3, 1).contiguous(), b=bias, y=y)


for name, shape in [
    ("k3_ragged", (2, 9, 23, 5, 21, 3, 1, True)),
    ("k3_stride2_odd", (1, 11, 29, 7, 40, 3, 2, False)),
    ("k3_narrow_rows", (2, 3, 4, 3, 24, 3, 1, True)),
    ("k5_stride2", (1, 13, 17, 6, 9, 5, 2, True)),
    ("k1_stride2", (1, 7, 9, 33, 17, 1, 2, False)),
]:
    conv2d_case(name, *shape)

for name, (Bn, H, W, C, k, stride, replicate, silu) in [
    ("k3_stride2_silu", (2, 9, 11, 19, 3, 2, False, True)),
    ("k5_replicate", (1, 6, 7, 10, 5, 1, True, False)),
    ("k7", (1, 8, 9, 12, 7, 1, False, False)),
]:
    x, w, bias = randn(gen, Bn, H, W, C), randn(gen, C, 1, k, k, scale=0.3), randn(gen, C)
    xd = x.double().permute(0, 3, 1, 2)
    if replicate:
        y = F.conv2d(F.pad(xd, (k // 2,) * 4, mode="replicate"), w.double(), bias.double(), stride=stride, groups=C)
    else:
        y = F.conv2d(xd, w.double(), bias.double(), stride=stride, padding=k // 2, groups=C)
    y = silu_if(y, silu).permute(0, 2, 3, 1)
    case("depthwise_k", name, {"stride": stride, "replicate": replicate, "silu": silu}, x=x, w=w, b=bias, y=y)

# ---- MSE ------------------------------------------------------------------------------------
pred, target = leaf(4, 16, 3, 5), randn(gen, 4, 16, 3, 5)
loss = F.mse_loss(pred, target)
loss.backward()
case("mse", "4d", {}, pred=pred, target=target, loss=loss.detach().reshape(1), dpred=pred.grad)

# ---- AdamW over several tensors, three steps; clip_grad_norm --------------------------------
shapes = [(5,), (3, 4), (1,)]
params = [randn(gen, *s).requires_grad_(True) for s in shapes]
hyper = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weightDecay": 1e-2}
opt = torch.optim.AdamW(params, lr=hyper["lr"], betas=(hyper["beta1"], hyper["beta2"]), eps=hyper["eps"], weight_decay=hyper["weightDecay"])
arrays = {f"p{i}.init": p.detach().clone() for i, p in enumerate(params)}
for step in range(1, 4):
    for i, p in enumerate(params):
        p.grad = randn(gen, *p.shape, scale=10.0 ** (i - 1))
        arrays[f"p{i}.grad{step}"] = p.grad.clone()
    opt.step()
    for i, p in enumerate(params):
        arrays[f"p{i}.step{step}"] = p.detach().clone()
case("adamw", "three_steps", {**hyper, "tensors": len(params), "steps": 3}, **arrays)

for name, max_norm, scale in [("clipped", 1.0, 1.0), ("unclipped", 100.0, 1.0)]:
    grads = [randn(gen, *s, scale=scale) for s in shapes]
    norm = torch.norm(torch.stack([torch.norm(g) for g in grads]))
    coef = min(1.0, max_norm / (float(norm) + 1e-6))
    case("clip", name, {"maxNorm": max_norm, "tensors": len(grads)},
         **{f"g{i}": g for i, g in enumerate(grads)}, **{f"out{i}": g * coef for i, g in enumerate(grads)}, norm=norm.reshape(1))

# ---- More convolutions, drawn last so that the cases above keep their values ----------------
# A row's last tile read in place over several kernel rows, with bias and SiLU after the last
# (stride 2 over an even side: 13 outputs, the last tile inside the input); a 1x1 convolution
# whose K spans two of the GEMM's K blocks, the epilogue after the second.
for name, shape in [
    ("k3_stride2_even", (1, 10, 26, 5, 40, 3, 2, True)),
    ("k3_stride2_even_wide", (1, 6, 50, 4, 24, 3, 2, True)),
    ("k1_deep", (1, 3, 5, 1700, 40, 1, 1, True)),
]:
    conv2d_case(name, *shape)

# A 1x1 convolution without activation, over two of the GEMM's K blocks: the tests add a
# residual to it (an MBConv block's projection), summed as C from the first block on.
conv2d_case("k1_deep_projection", 2, 3, 5, 1700, 40, 1, 1, False)

os.makedirs(os.path.dirname(OUT), exist_ok=True)
write_safetensors(OUT, tensors, {"cases": json.dumps(cases), "generator": "tests/reference/ops_fixtures.py", "torch": torch.__version__})
print(f"wrote {len(cases)} cases, {len(tensors)} tensors to {os.path.relpath(OUT)}")
