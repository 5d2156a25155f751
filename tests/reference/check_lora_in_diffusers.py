"""Cross-check, by hand, that diffusers reproduces lora-train's adapted prior from the LoRA file
lora-train saved, and that README's hand-off recipe works on the diffusers installed. Not part
of `npm test` (CI has no Python):

    node tests/reference/export-lora-check.js <snapshot>/prior <lora source> <out dir>   # writes the file and outputs
    python tests/reference/check_lora_in_diffusers.py <snapshot> <out dir>

<snapshot> is a diffusers Würstchen prior snapshot (prior/, text_encoder/, tokenizer/,
scheduler/), e.g. the built-in demo's ~/.cache/lora-train/models/tiny-wuerstchen-v1-seed0.
Two ways of loading are checked against lora-train's output on the inputs saved in
<out dir>/ours.safetensors:
1. the prior alone, with the LoRA loaded the way WuerstchenPriorPipeline.load_lora_weights does;
2. README's recipe: the pipeline built from its components one by one, then
   pipe.load_lora_weights(<out dir>). Since diffusers 0.42 Würstchen lives in
   diffusers.pipelines.deprecated.wuerstchen, and WuerstchenPriorPipeline.from_pretrained of a
   snapshot whose model_index.json names the `wuerstchen` library is refused; the components
   load on every version checked."""
import sys

import diffusers
import torch
from safetensors.torch import load_file
from transformers import CLIPTextModel, CLIPTokenizerFast

try:  # diffusers >= 0.42
    from diffusers.pipelines.deprecated.wuerstchen import WuerstchenPrior, WuerstchenPriorPipeline
except ImportError:
    from diffusers.pipelines.wuerstchen import WuerstchenPrior, WuerstchenPriorPipeline
from diffusers import DDPMWuerstchenScheduler

snapshot, out_dir = sys.argv[1], sys.argv[2]
ours = load_file(f"{out_dir}/ours.safetensors")


def error(prior):
    with torch.no_grad():
        out = prior(ours["x"], ours["r"], ours["clip"])
    return float((out - ours["out"]).abs().max() / ours["out"].abs().max())


prior = WuerstchenPrior.from_pretrained(snapshot, subfolder="prior").eval()
state_dict, alphas = WuerstchenPriorPipeline.lora_state_dict(f"{out_dir}/pytorch_lora_weights.safetensors")
WuerstchenPriorPipeline.load_lora_into_unet(state_dict, alphas, unet=prior)
direct = error(prior)

# README's recipe.
pipe = WuerstchenPriorPipeline(
    prior=WuerstchenPrior.from_pretrained(snapshot, subfolder="prior"),
    text_encoder=CLIPTextModel.from_pretrained(snapshot, subfolder="text_encoder"),
    tokenizer=CLIPTokenizerFast.from_pretrained(snapshot, subfolder="tokenizer"),
    scheduler=DDPMWuerstchenScheduler.from_pretrained(snapshot, subfolder="scheduler"),
)
pipe.load_lora_weights(out_dir)
recipe = error(pipe.prior.eval())

print(f"diffusers {diffusers.__version__}: relative error against lora-train: prior alone {direct:.2e}, README recipe {recipe:.2e}")
sys.exit(0 if max(direct, recipe) < 1e-5 else 1)
