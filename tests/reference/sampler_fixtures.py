"""Writes tests/fixtures/sampler/reference.safetensors: a sampling trajectory of diffusers'
WuerstchenPrior (the f32_nonsquare fixture prior, float64) with DDPMWuerstchenScheduler on
DEFAULT_STAGE_C_TIMESTEPS and classifier-free guidance, from given initial latents and given
step noise (diffusers' randn_tensor is replaced by a queue of pre-drawn noise).
Run after prior_fixtures.py: python tests/reference/sampler_fixtures.py"""
import json
import os
import sys

import diffusers
import torch
from diffusers import DDPMWuerstchenScheduler
from diffusers.pipelines.wuerstchen import WuerstchenPrior
from diffusers.pipelines.wuerstchen.pipeline_wuerstchen_prior import DEFAULT_STAGE_C_TIMESTEPS
import diffusers.schedulers.scheduling_ddpm_wuerstchen as scheduling

sys.path.insert(0, os.path.dirname(__file__))
from common import write_safetensors  # noqa: E402

HERE = os.path.dirname(__file__)
PRIOR = os.path.join(HERE, "..", "fixtures", "prior", "f32_nonsquare")
OUT = os.path.join(HERE, "..", "fixtures", "sampler")


def main():
    gen = torch.Generator().manual_seed(31)
    prior = WuerstchenPrior.from_pretrained(PRIOR).double().eval()
    B, c_in, h, w, T, guidance = 2, prior.config.c_in, 3, 4, 7, 4.0
    cond = torch.randn(B, T, prior.config.c_cond, generator=gen)
    uncond = torch.randn(B, T, prior.config.c_cond, generator=gen)
    latents = torch.randn(B, c_in, h, w, generator=gen)
    steps = len(DEFAULT_STAGE_C_TIMESTEPS) - 1
    noise = torch.randn(steps, B, c_in, h, w, generator=gen)
    queue = [n.double() for n in noise]
    scheduling.randn_tensor = lambda shape, generator=None, device=None, dtype=None: queue.pop(0)

    scheduler = DDPMWuerstchenScheduler()
    scheduler.set_timesteps(timesteps=DEFAULT_STAGE_C_TIMESTEPS)
    x = latents.double()
    clip = torch.cat([cond, uncond]).double()
    trajectory = []
    with torch.no_grad():
        for t in scheduler.timesteps[:-1]:
            ratio = t.expand(B).float().double()  # the pipeline casts t to the model dtype (fp32 in practice)
            out = prior(torch.cat([x] * 2), r=torch.cat([ratio] * 2), c=clip)
            text, uncond_out = out.chunk(2)
            eps = torch.lerp(uncond_out, text, guidance)
            x = scheduler.step(model_output=eps, timestep=ratio, sample=x).prev_sample
            trajectory.append(x)
    final = x * 42.0 - 1.0
    os.makedirs(OUT, exist_ok=True)
    write_safetensors(os.path.join(OUT, "reference.safetensors"),
                      {"cond": cond, "uncond": uncond, "latents": latents, "noise": noise, "trajectory": torch.stack(trajectory), "final": final,
                       "timesteps": torch.tensor(DEFAULT_STAGE_C_TIMESTEPS, dtype=torch.float64)},
                      {"guidance": json.dumps(guidance), "generator": "tests/reference/sampler_fixtures.py", "diffusers": diffusers.__version__})
    print("wrote", OUT, "steps", steps)


if __name__ == "__main__":
    main()
