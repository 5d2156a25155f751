"""Writes tests/fixtures/vqgan/: the state-dict key set (with shapes) of diffusers' PaellaVQModel
at its default config, which is warp-ai/wuerstchen's vqgan/, and two small random configs as
diffusers saves them (config.json, diffusion_pytorch_model.safetensors) with float64 references
of PaellaVQModel.decode (force_not_quantize, as WuerstchenDecoderPipeline calls it) from
non-square float32 latents. Every parameter is drawn at random, the residual blocks' gammas
too (diffusers initialises those to zero, which would make every block the identity).
Tests compare lora-train's fp32 decode with these to 1e-5 relative.
Run with torch and diffusers: python tests/reference/vqgan_fixtures.py"""
import json
import os
import sys

import diffusers
import torch
from diffusers.pipelines.deprecated.wuerstchen.modeling_paella_vq_model import PaellaVQModel

sys.path.insert(0, os.path.dirname(__file__))
from common import randn, write_safetensors  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "vqgan")

CASES = {
    # two levels, as the real model, at small widths; odd latent channels
    "two_levels": dict(levels=2, bottleneck_blocks=2, embed_dim=32, latent_channels=3, num_vq_embeddings=16,
                       up_down_scale_factor=2, scale_factor=0.3764),
    # three levels: two transposed convolutions; pixel shuffle by 3
    "three_levels": dict(levels=3, bottleneck_blocks=1, embed_dim=48, latent_channels=4, num_vq_embeddings=8,
                         up_down_scale_factor=3, scale_factor=0.5),
    # the decoder fixtures' 4 latent channels at a small output: decoder_fixtures.py's pictures
    "pictures": dict(levels=2, bottleneck_blocks=1, embed_dim=16, latent_channels=4, num_vq_embeddings=8,
                     up_down_scale_factor=2, scale_factor=0.3764),
}
LATENTS = {"two_levels": (2, 5, 7), "three_levels": (1, 4, 3), "pictures": (1, 6, 4)}  # (batch, height, width)


def main():
    os.makedirs(OUT, exist_ok=True)
    real = PaellaVQModel()
    with open(os.path.join(OUT, "real_keys.json"), "w") as f:
        json.dump({k: list(v.shape) for k, v in real.state_dict().items()}, f, indent=0)
    gen = torch.Generator().manual_seed(11)
    for name, config in CASES.items():
        model = PaellaVQModel(**config).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(randn(gen, *p.shape, scale=0.3))
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
        folder = os.path.join(OUT, name)
        model.save_pretrained(folder, safe_serialization=True)
        b, h, w = LATENTS[name]
        latents = randn(gen, b, config["latent_channels"], h, w)
        with torch.no_grad():
            out = model.double().decode(latents).sample
        write_safetensors(os.path.join(folder, "reference.safetensors"), {"latents": latents, "out": out},
                          {"generator": "tests/reference/vqgan_fixtures.py", "torch": torch.__version__,
                           "diffusers": diffusers.__version__})
        print(f"{name}: latents {tuple(latents.shape)} -> {tuple(out.shape)}")


if __name__ == "__main__":
    main()
