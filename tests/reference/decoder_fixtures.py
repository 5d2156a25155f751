"""Writes tests/fixtures/decoder/: the state-dict key set (with shapes) of diffusers'
WuerstchenDiffNeXt (Würstchen's Stage B) at its default config, which is warp-ai/wuerstchen's
decoder/, and a small random config as diffusers saves it (config.json,
diffusion_pytorch_model.safetensors) with a float64 reference of its forward (eval mode: no
dropout) on non-square latents: every level type (CT, CTA), odd head counts, effnet injection
(the embedding both upsampled and, for the deepest level, downsampled by the antialiased bicubic
interpolation), skip concatenations. Every parameter is drawn at random (diffusers initialises
the output and the timestep mappers to zero). Tests compare lora-train's fp32 forward to 1e-5
relative.
Run with torch and diffusers: python tests/reference/decoder_fixtures.py"""
import json
import os
import sys

import diffusers
import torch
from diffusers.pipelines.deprecated.wuerstchen.modeling_wuerstchen_diffnext import WuerstchenDiffNeXt

sys.path.insert(0, os.path.dirname(__file__))
from common import randn, write_safetensors  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "decoder")

TINY = dict(c_in=4, c_out=4, c_r=16, patch_size=2, c_cond=12, c_hidden=[8, 12, 18, 18], nhead=[-1, 3, 3, 1],
            blocks=[1, 1, 2, 1], level_config=["CT", "CTA", "CTA", "CTA"], inject_effnet=[False, True, True, True],
            effnet_embd=6, clip_embd=10, kernel_size=3, dropout=0.1)


def main():
    os.makedirs(OUT, exist_ok=True)
    with torch.device("meta"):
        real = WuerstchenDiffNeXt()
    with open(os.path.join(OUT, "real_keys.json"), "w") as f:
        json.dump({k: list(v.shape) for k, v in real.state_dict().items()}, f, indent=0)

    gen = torch.Generator().manual_seed(21)
    model = WuerstchenDiffNeXt(**TINY).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(randn(gen, *p.shape, scale=0.3))
    folder = os.path.join(OUT, "tiny")
    model.save_pretrained(folder, safe_serialization=True)
    B, H, W, T = 2, 32, 48, 5
    x = randn(gen, B, TINY["c_in"], H, W)
    r = torch.rand(B, generator=gen, dtype=torch.float32).to(torch.float64)
    effnet = randn(gen, B, TINY["effnet_embd"], 5, 7)
    clip = randn(gen, B, T, TINY["clip_embd"])
    with torch.no_grad():
        out = model.double()(x, r, effnet, clip)
    write_safetensors(os.path.join(folder, "reference.safetensors"),
                      {"x": x, "r": r, "effnet": effnet, "clip": clip, "out": out},
                      {"generator": "tests/reference/decoder_fixtures.py", "torch": torch.__version__,
                       "diffusers": diffusers.__version__})
    print(f"tiny: x {tuple(x.shape)} effnet {tuple(effnet.shape)} clip {tuple(clip.shape)} -> {tuple(out.shape)}")


if __name__ == "__main__":
    main()
