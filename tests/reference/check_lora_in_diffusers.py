"""Cross-check, by hand, that diffusers reproduces lora-train's adapted prior from the LoRA file
lora-train saved. Not part of `npm test` (CI has no Python):

    node tests/reference/export-lora-check.js <prior dir> <lora source> <out dir>   # writes the file and outputs
    python tests/reference/check_lora_in_diffusers.py <prior dir> <out dir>

It loads the prior with diffusers, loads <out dir>/pytorch_lora_weights.safetensors the way
WuerstchenPriorPipeline.load_lora_weights does, runs the inputs saved in <out dir>/ours.safetensors
and prints the relative error against lora-train's output."""
import sys

import diffusers
import torch
from diffusers.pipelines.wuerstchen import WuerstchenPrior, WuerstchenPriorPipeline
from safetensors.torch import load_file

prior_dir, out_dir = sys.argv[1], sys.argv[2]
prior = WuerstchenPrior.from_pretrained(prior_dir).eval()
state_dict, alphas = WuerstchenPriorPipeline.lora_state_dict(f"{out_dir}/pytorch_lora_weights.safetensors")
WuerstchenPriorPipeline.load_lora_into_unet(state_dict, alphas, unet=prior)
ours = load_file(f"{out_dir}/ours.safetensors")
with torch.no_grad():
    out = prior(ours["x"], ours["r"], ours["clip"])
err = float((out - ours["out"]).abs().max() / ours["out"].abs().max())
print(f"diffusers {diffusers.__version__}: relative error against lora-train {err:.2e}")
sys.exit(0 if err < 1e-5 else 1)
