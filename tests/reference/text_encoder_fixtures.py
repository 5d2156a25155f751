"""Writes tests/fixtures/text_encoder/<case>/: small random transformers CLIPTextModels saved with
save_pretrained (config.json + model.safetensors), token ids with padding masks, and the
float64 last_hidden_state. Run with transformers installed: python tests/reference/text_encoder_fixtures.py [case ...]
(default: every case). transformers 4.x saves CLIPTextModel's weights under text_model., 5.x without
that prefix: gelu_f32 and quick_gelu_f16 were written by 4.44, bf16_transformers5 by 5.x."""
import json
import os
import shutil
import sys

import torch
import transformers
from transformers import CLIPTextConfig, CLIPTextModel

sys.path.insert(0, os.path.dirname(__file__))
from common import write_safetensors  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "text_encoder")
CASES = [
    # name, config, dtype, lengths (real tokens incl. BOS/EOS per row; T = 77)
    ("gelu_f32", dict(vocab_size=1000, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4, hidden_act="gelu", layer_norm_eps=1e-5), torch.float32, [5, 77, 2]),
    ("quick_gelu_f16", dict(vocab_size=700, hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=3, hidden_act="quick_gelu", layer_norm_eps=1e-5), torch.float16, [12, 1]),
    ("bf16_transformers5", dict(vocab_size=500, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, hidden_act="gelu", layer_norm_eps=1e-5), torch.bfloat16, [7, 3]),
]


def main():
    gen = torch.Generator().manual_seed(77)
    torch.manual_seed(77)
    wanted = sys.argv[1:] or [c[0] for c in CASES]
    for name, config, dtype, lengths in CASES:
        out_dir = os.path.join(ROOT, name)
        if name not in wanted:
            continue
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        model = CLIPTextModel(CLIPTextConfig(max_position_embeddings=77, **config))
        with torch.no_grad():  # non-trivial LayerNorm affine parameters
            for pname, p in model.named_parameters():
                if "layer_norm" in pname:
                    p.add_(torch.randn(p.shape, generator=gen) * 0.1)
        model.to(dtype).save_pretrained(out_dir, safe_serialization=True)
        ref = CLIPTextModel.from_pretrained(out_dir, attn_implementation="eager").double().eval()
        B, T = len(lengths), 77
        ids = torch.randint(0, config["vocab_size"], (B, T), generator=gen)
        mask = torch.zeros(B, T, dtype=torch.long)
        for b, n in enumerate(lengths):
            mask[b, :n] = 1
            ids[b, n:] = config["vocab_size"] - 1  # a pad id, as the tokenizer writes
        torch.set_default_dtype(torch.float64)  # transformers builds its -inf masks in the default dtype
        with torch.no_grad():
            hidden = ref(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.set_default_dtype(torch.float32)
        write_safetensors(os.path.join(out_dir, "reference.safetensors"), {"ids": ids.float(), "mask": mask.float(), "last_hidden_state": hidden},
                          {"generator": "tests/reference/text_encoder_fixtures.py", "transformers": transformers.__version__, "torch": torch.__version__})
        print(name, sorted(os.listdir(out_dir)))


if __name__ == "__main__":
    main()
