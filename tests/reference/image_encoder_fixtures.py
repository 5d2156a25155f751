"""Writes tests/fixtures/image_encoder/: the state-dict key set of Würstchen's EfficientNetEncoder
(torchvision efficientnet_v2_s features as `backbone`, plus the mapper), and a width-reduced
variant of the same architecture with random weights and batch-norm statistics: its config,
its weights as safetensors and as a torch.save'd checkpoint ({'effnet_state_dict': ...}, as in
model_v2_stage_b.pt), two images and the float64 output in eval mode.
Run with torch and torchvision: python tests/reference/image_encoder_fixtures.py"""
import json
import os
import sys
from functools import partial

import torch
import torch.nn as nn
import torchvision
from safetensors.torch import save_file
from torchvision.models import efficientnet_v2_s
from torchvision.models.efficientnet import EfficientNet, FusedMBConvConfig, MBConvConfig

sys.path.insert(0, os.path.dirname(__file__))
from common import write_safetensors  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "image_encoder")


class EfficientNetEncoder(nn.Module):
    """diffusers' examples/wuerstchen EfficientNetEncoder, with a chosen backbone."""

    def __init__(self, features, c_cond, c_latent=16):
        super().__init__()
        self.backbone = features
        self.mapper = nn.Sequential(nn.Conv2d(c_cond, c_latent, kernel_size=1, bias=False), nn.BatchNorm2d(c_latent))

    def forward(self, x):
        return self.mapper(self.backbone(x))


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(5)
    full = EfficientNetEncoder(efficientnet_v2_s().features, 1280)
    with open(os.path.join(OUT, "effnet_v2_s_keys.json"), "w") as f:
        json.dump({k: list(v.shape) for k, v in full.state_dict().items()}, f, indent=0)

    stages = [  # (fused, expand, kernel, stride, in, out, layers)
        (True, 1, 3, 1, 8, 8, 1), (True, 4, 3, 2, 8, 16, 2), (True, 4, 3, 2, 16, 16, 1),
        (False, 4, 3, 2, 16, 24, 2), (False, 6, 3, 1, 24, 32, 1), (False, 6, 3, 2, 32, 40, 2),
    ]
    settings = [(FusedMBConvConfig if fused else MBConvConfig)(e, k, s, i, o, n) for fused, e, k, s, i, o, n in stages]
    last = 64
    net = EfficientNet(settings, dropout=0.2, last_channel=last, norm_layer=partial(nn.BatchNorm2d, eps=1e-03))
    model = EfficientNetEncoder(net.features, last)
    gen = torch.Generator().manual_seed(6)
    with torch.no_grad():  # batch norms with statistics and affine parameters worth folding
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
                m.num_batches_tracked.fill_(100)
    model.eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(OUT, "tiny_effnet.safetensors"))
    torch.save({"effnet_state_dict": state, "step": 5}, os.path.join(OUT, "tiny_effnet.pt"))
    config = {"stages": [dict(zip(["fused", "expand", "kernel", "stride", "in", "out", "layers"], s)) for s in stages], "last_channel": last, "latent_channels": 16}
    with open(os.path.join(OUT, "tiny_effnet.config.json"), "w") as f:
        json.dump(config, f, indent=1)
    images = torch.randn(2, 3, 64, 96, generator=gen)
    with torch.no_grad():
        out = model.double()(images.double())
    write_safetensors(os.path.join(OUT, "reference.safetensors"), {"images": images, "out": out},
                      {"generator": "tests/reference/image_encoder_fixtures.py", "torchvision": torchvision.__version__, "torch": torch.__version__})
    print(f"wrote {OUT}: {sorted(os.listdir(OUT))}; out {tuple(out.shape)}")


if __name__ == "__main__":
    main()
