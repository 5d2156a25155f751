"""Writes tests/fixtures/pickle/: real torch.save checkpoints for lora-train's safe checkpoint
reader: tensors of several dtypes, a non-contiguous view and a storage shared by two tensors,
nested containers, and one checkpoint whose pickle calls a forbidden global (os.system), which
the reader must refuse without running anything. Run with torch: python tests/reference/pickle_fixtures.py"""
import json
import os

import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "pickle")


class Payload:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def main():
    os.makedirs(OUT, exist_ok=True)
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    checkpoint = {
        "weights": {
            "f32": torch.linspace(-1, 1, 10),
            "f16": torch.tensor([1.0, -2.5, 65504.0, 6e-5], dtype=torch.float16),
            "bf16": torch.tensor([1.0, -2.5, 3.0e38, 1e-30], dtype=torch.bfloat16),
            "f64": torch.tensor([[0.1, 0.2], [0.3, 0.4]], dtype=torch.float64),
            "i64": torch.tensor([7, -8, 9]),
            "transposed": base.t(),           # non-contiguous: strides (1, 6)
            "slice": base[1:3, 2:5],          # offset into a shared storage
            "scalar": torch.tensor(3.5),
        },
        "step": 1234,
        "meta": {"name": "tiny", "lr": 1e-4, "flags": [True, False, None], "pair": (1, "two")},
    }
    torch.save(checkpoint, os.path.join(OUT, "tensors.pt"))
    expected = {k: {"shape": list(v.shape), "values": v.double().flatten().tolist()} for k, v in checkpoint["weights"].items()}
    with open(os.path.join(OUT, "tensors.expected.json"), "w") as f:
        json.dump({"weights": expected, "step": 1234, "meta": {"name": "tiny", "lr": 1e-4, "flags": [True, False, None], "pair": [1, "two"]}}, f)
    torch.save({"weights": {"w": torch.ones(2)}, "payload": Payload()}, os.path.join(OUT, "forbidden_global.pt"))
    print(f"wrote {sorted(os.listdir(OUT))} with torch {torch.__version__}")


if __name__ == "__main__":
    main()
