"""Writes tests/fixtures/prior/<case>/: tiny random Würstchen priors saved by diffusers itself
(config.json + safetensors in F32, F16 or BF16, one of them sharded), inputs, the float64
forward of diffusers' WuerstchenPrior, LoRA adapters made by peft with their gradients, the
output with the adapters merged into the weights, and the adapters in the two file formats a
user brings: diffusers' pytorch_lora_weights.safetensors and a peft folder.

Run with a Python that has torch, diffusers (0.30) and peft: python tests/reference/prior_fixtures.py
"""
import json
import os
import shutil
import sys

import diffusers
import peft
import torch
import torch.nn.functional as F
from diffusers.pipelines.wuerstchen import WuerstchenPrior, WuerstchenPriorPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

sys.path.insert(0, os.path.dirname(__file__))
from common import write_safetensors  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "prior")

CASES = [
    # name, config, batch, H, W, text tokens, saved dtype, shard size, LoRA (rank, alpha, targets)
    ("f32_nonsquare", dict(c_in=4, c=32, c_cond=24, c_r=8, depth=2, nhead=2, dropout=0.1), 2, 3, 5, 7, torch.float32, None,
     (4, 8.0, ["to_q", "to_k", "to_v", "to_out.0"])),
    ("f16_odd_cr", dict(c_in=3, c=24, c_cond=16, c_r=7, depth=1, nhead=3, dropout=0.0), 1, 4, 4, 5, torch.float16, None,
     (2, 2.0, ["to_q", "to_v"])),
    ("bf16_sharded_all_targets", dict(c_in=16, c=64, c_cond=32, c_r=64, depth=3, nhead=4, dropout=0.1), 3, 6, 6, 77, torch.bfloat16, "60KB",
     (8, 4.0, ["to_q", "to_k", "to_v", "to_out.0", "kv_mapper.1", "channelwise.0", "channelwise.4"])),
]


def randomise(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("gamma", "beta")):
                # diffusers zero-initialises GlobalResponseNorm; random values exercise it.
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
            elif name.startswith("out.1"):
                # The output divides by |1 - b| + 1e-5; with default init b sometimes lands near
                # 1 and the division amplifies float32 rounding a hundredfold. Small output
                # weights keep b near 0, so the comparison measures the network, not that pole.
                p.mul_(0.1)


def merged_forward(base, lora_state, scale, x, r, clip):
    """Reference with the adapters merged into the weights: W + scale * B @ A, in float64."""
    merged = WuerstchenPrior(**base.config).double().eval()
    merged.load_state_dict(base.state_dict())
    sd = merged.state_dict()
    for key, a in lora_state.items():
        if not key.endswith("lora_A.weight"):
            continue
        module = key[: -len(".lora_A.weight")]
        b = lora_state[module + ".lora_B.weight"]
        sd[module + ".weight"] += scale * (b.double() @ a.double())
    merged.load_state_dict(sd)
    with torch.no_grad():
        return merged(x, r, clip)


def main():
    gen = torch.Generator().manual_seed(2024)
    torch.manual_seed(2024)
    if os.path.exists(ROOT):
        shutil.rmtree(ROOT)
    for name, config, B, H, W, T, dtype, shard, (rank, alpha, targets) in CASES:
        out_dir = os.path.join(ROOT, name)
        model = WuerstchenPrior(**config)
        randomise(model, gen)
        save_kwargs = {"safe_serialization": True}
        if shard:
            save_kwargs["max_shard_size"] = shard
        model.to(dtype).save_pretrained(out_dir, **save_kwargs)
        base = WuerstchenPrior.from_pretrained(out_dir).double().eval()  # the weights as stored

        x = torch.randn(B, config["c_in"], H, W, generator=gen)
        r = torch.rand(B, generator=gen)
        clip = torch.randn(B, T, config["c_cond"], generator=gen)
        target = torch.randn(B, config["c_in"], H, W, generator=gen)
        with torch.no_grad():
            out = base(x.double(), r.double(), clip.double())

        lora_model = WuerstchenPrior.from_pretrained(out_dir).double().eval()
        lora_config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights=True)
        lora_model.add_adapter(lora_config)
        with torch.no_grad():  # non-zero B, so the adapter changes the output and dA is non-trivial
            for pname, p in lora_model.named_parameters():
                if "lora_" in pname:
                    p.copy_(torch.randn(p.shape, generator=gen).to(torch.float32).double() * 0.05)
        lora_out = lora_model(x.double(), r.double(), clip.double())
        loss = F.mse_loss(lora_out, target.double())
        loss.backward()
        lora_state = {k: v.detach().float() for k, v in get_peft_model_state_dict(lora_model).items()}
        grads = {}
        for pname, p in lora_model.named_parameters():
            if "lora_" in pname:
                key = pname.replace(".default", "")
                grads[key + ".grad"] = p.grad
        scale = alpha / rank

        # The adapters as a user brings them: diffusers' file (unscaled: diffusers loads it with
        # alpha = r) and a peft folder (adapter_config.json carries alpha).
        WuerstchenPriorPipeline.save_lora_weights(os.path.join(out_dir, "lora_diffusers"), unet_lora_layers=lora_state)
        peft_dir = os.path.join(out_dir, "lora_peft")
        os.makedirs(peft_dir)
        write_safetensors(os.path.join(peft_dir, "adapter_model.safetensors"), {f"base_model.model.{k}": v for k, v in lora_state.items()})
        cfg = lora_config.to_dict()
        cfg = {k: (sorted(v) if isinstance(v, set) else v) for k, v in cfg.items()}
        with open(os.path.join(peft_dir, "adapter_config.json"), "w") as f:
            json.dump(cfg, f, indent=2, default=str)

        write_safetensors(
            os.path.join(out_dir, "reference.safetensors"),
            {
                "x": x, "r": r, "clip": clip, "target": target, "out": out,
                "lora_out": lora_out.detach(), "loss": loss.detach().reshape(1),
                "merged_peft_out": merged_forward(base, lora_state, scale, x.double(), r.double(), clip.double()),
                "merged_diffusers_out": merged_forward(base, lora_state, 1.0, x.double(), r.double(), clip.double()),
                **{f"lora.{k}": v for k, v in lora_state.items()},
                **grads,
            },
            {"case": json.dumps({"name": name, "config": config, "B": B, "H": H, "W": W, "T": T, "rank": rank, "alpha": alpha,
                                 "targets": targets, "dtype": str(dtype).replace("torch.", "")}),
             "generator": "tests/reference/prior_fixtures.py", "diffusers": diffusers.__version__, "peft": peft.__version__,
             "torch": torch.__version__},
        )
        print(f"{name}: {sorted(os.listdir(out_dir))}")


if __name__ == "__main__":
    main()
