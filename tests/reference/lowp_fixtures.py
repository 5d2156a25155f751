"""Writes tests/fixtures/lowp.safetensors: PyTorch's rounding of fp32 to bf16 and fp16, and GEMMs
with bf16/fp16 operands (fp32 accumulation, as tensor cores do), computed in float64 from the
rounded operands. An fp32 operand beside a low-precision one is rounded to that type first
(autocast's rule). Bits are stored as F32 integers (the fixture writer knows only F32).
Run: python3 tests/reference/lowp_fixtures.py (needs torch)."""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import randn, write_safetensors  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "lowp.safetensors")
gen = torch.Generator().manual_seed(4321)
tensors = {}
cases = []
TYPES = {"bf16": torch.bfloat16, "f16": torch.float16}


def case(op, name, params, **arrays):
    cid = f"{op}.{name}"
    cases.append({"op": op, "id": cid, **params})
    for key, value in arrays.items():
        tensors[f"{cid}.{key}"] = value


def bits(x, dtype):
    return x.to(torch.float32).to(TYPES[dtype]).view(torch.int16).to(torch.int64) & 0xFFFF


# ---- Conversion: every exponent range, ties, f16 subnormals and overflow, infinities, NaN ----
span = torch.exp2(torch.linspace(-30, 20, 2001, dtype=torch.float64)).to(torch.float32)
mant = 1 + torch.rand(2001, generator=gen, dtype=torch.float32)
special = torch.tensor([0.0, -0.0, 65504.0, 65519.0, 65520.0, 65536.0, 1e30, -1e30, float("inf"), float("-inf"),
                        2.0 ** -24, 2.0 ** -25, 1.5 * 2.0 ** -25, 2.0 ** -14, 2.0 ** -14 - 2.0 ** -25, 3 * 2.0 ** -26,
                        1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, 1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11, 3.4e38, 1e-40,
                        float("nan")], dtype=torch.float32)
x = torch.cat([span * mant, -(span * mant.flip(0)), special, torch.randn(500, generator=gen)])
case("convert", "all", {}, x=x, bf16=bits(x, "bf16"), f16=bits(x, "f16"),
     bf16_value=x.to(torch.bfloat16).to(torch.float32), f16_value=x.to(torch.float16).to(torch.float32))

# ---- GEMM with low-precision operands --------------------------------------------------------
for (M, N, K, at, bt, ta, tb) in [(7, 13, 5, "bf16", "bf16", False, True), (37, 70, 129, "bf16", "f32", False, True),
                                  (50, 20, 600, "f32", "bf16", True, False), (33, 41, 64, "f16", "f16", True, True),
                                  (12, 32, 256, "f16", "f32", False, False),
                                  # sizes AMX tiles take (M, N, K >= 32 on each of two threads), in every layout a bf16 GEMM meets:
                                  # x W^T, dY W with K past one packed block, transposed A
                                  (64, 96, 200, "bf16", "bf16", False, True), (96, 70, 1600, "f32", "bf16", False, False),
                                  (40, 33, 77, "bf16", "bf16", True, False), (33, 35, 40, "f32", "bf16", True, True),
                                  # an fp32 A packed (too many columns per thread to be read in place), rounded as gathered
                                  (20, 1100, 77, "f32", "bf16", False, True)]:
    a = randn(gen, K, M) if ta else randn(gen, M, K)
    b = randn(gen, N, K) if tb else randn(gen, K, N)
    low = at if at != "f32" else bt
    ar, br = a.to(torch.float32).to(TYPES[low]).double(), b.to(torch.float32).to(TYPES[low]).double()
    c = (ar.t() if ta else ar) @ (br.t() if tb else br)
    case("gemm_lowp", f"{M}x{N}x{K}.{at}.{bt}.{int(ta)}{int(tb)}", {"M": M, "N": N, "K": K, "transA": ta, "transB": tb, "aType": at, "bType": bt},
         A=a if at == "f32" else bits(a, at), B=b if bt == "f32" else bits(b, bt), C=c)

write_safetensors(OUT, tensors, {"cases": json.dumps(cases), "torch": torch.__version__})
print(f"wrote {len(cases)} cases to {OUT}")
