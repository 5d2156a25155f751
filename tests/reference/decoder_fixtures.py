"""Writes tests/fixtures/decoder/: the state-dict key set (with shapes) of diffusers'
WuerstchenDiffNeXt (Würstchen's Stage B) at its default config, which is warp-ai/wuerstchen's
decoder/, and a small random config as diffusers saves it (config.json,
diffusion_pytorch_model.safetensors) with a float64 reference of its forward (eval mode: no
dropout) on non-square latents: every level type (CT, CTA), odd head counts, effnet injection
(the embedding both upsampled and, for the deepest level, downsampled by the antialiased bicubic
interpolation), skip concatenations. Every parameter is drawn at random (diffusers initialises
the output and the timestep mappers to zero). Tests compare lora-train's fp32 forward to 1e-5
relative.
Then a whole picture as WuerstchenDecoderPipeline makes it, with that decoder (its output
layer tamed, saved as pictures/) and the
pictures VQGAN of vqgan_fixtures.py (run that first): DDPMWuerstchenScheduler's 12 steps from
given latents, with the noise of each step recorded, without guidance and with guidance 2.5
(the effnet zeroed and unconditional text for the second half, torch.lerp), then
vqgan.decode(scale_factor * latents).clamp(0, 1), all in float64. Tests hold lora-train to 1e-4.
Run with torch and diffusers: python tests/reference/decoder_fixtures.py"""
import json
import os
import sys

import diffusers
import torch
from diffusers import DDPMWuerstchenScheduler
from diffusers.pipelines.deprecated.wuerstchen.modeling_paella_vq_model import PaellaVQModel
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
    write_pictures(model.double())


def write_pictures(decoder):
    """WuerstchenDecoderPipeline's loop, written out so that each step's noise can be recorded.
    The decoder is the tiny one with its output layer tamed, as a trained one is: b = sigmoid(s)
    near 1 and a small, else (x - a) / b grows each step and the pictures are all clamped."""
    c_out = TINY["c_out"] * TINY["patch_size"] ** 2
    with torch.no_grad():
        decoder.clf[1].weight.mul_(0.1)
        decoder.clf[1].bias[c_out:] = 4.0
    decoder.float().save_pretrained(os.path.join(OUT, "pictures"), safe_serialization=True)
    decoder = decoder.double()
    vqgan = PaellaVQModel.from_pretrained(os.path.join(OUT, "..", "vqgan", "pictures")).double().eval()
    gen = torch.Generator().manual_seed(31)
    B, T = 2, 4
    embeddings = randn(gen, B, TINY["effnet_embd"], 3, 3)
    cond, uncond = randn(gen, B, T, TINY["clip_embd"]), randn(gen, B, T, TINY["clip_embd"])
    height, width = int(3 * 10.67), int(3 * 10.67)  # the pipeline's latent_dim_scale
    start = randn(gen, B, TINY["c_in"], height, width)
    tensors = {"embeddings": embeddings, "cond": cond, "uncond": uncond, "latents": start}
    for label, guidance in (("plain", 0.0), ("guided", 2.5)):
        scheduler = DDPMWuerstchenScheduler()
        scheduler.set_timesteps(12)
        noise_gen = torch.Generator().manual_seed(41)
        latents, noises = start.clone(), []
        for t in scheduler.timesteps[:-1]:
            ratio = t.expand(B).to(torch.float64)
            with torch.no_grad():
                if guidance > 1:
                    both = decoder(torch.cat([latents] * 2), r=torch.cat([ratio] * 2),
                                   effnet=torch.cat([embeddings, torch.zeros_like(embeddings)]),
                                   clip=torch.cat([cond, uncond]))
                    text, plain = both.chunk(2)
                    predicted = torch.lerp(plain, text, guidance)
                else:
                    predicted = decoder(latents, r=ratio, effnet=embeddings, clip=cond)
            state = noise_gen.get_state()
            noises.append(torch.randn(latents.shape, generator=noise_gen, dtype=torch.float64))
            noise_gen.set_state(state)
            latents = scheduler.step(predicted, ratio, latents, generator=noise_gen).prev_sample
        with torch.no_grad():
            images = vqgan.decode(vqgan.config.scale_factor * latents).sample.clamp(0, 1)
        tensors[f"{label}.noise"] = torch.stack(noises)
        tensors[f"{label}.final"] = latents
        tensors[f"{label}.images"] = images
        print(f"{label}: latents {tuple(latents.shape)} -> images {tuple(images.shape)}")
    write_safetensors(os.path.join(OUT, "pictures.safetensors"), tensors,
                      {"generator": "tests/reference/decoder_fixtures.py", "torch": torch.__version__,
                       "diffusers": diffusers.__version__})


if __name__ == "__main__":
    main()
