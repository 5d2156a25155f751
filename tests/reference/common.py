"""Shared helpers for the PyTorch reference scripts: a seeded generator and a minimal
safetensors writer (the format is simple enough that CI needs no extra Python package; the
fixtures are committed, so CI needs no Python at all)."""
import json
import struct

import torch


def write_safetensors(path, tensors, metadata=None):
    header = {}
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        t = tensors[name].detach().to(torch.float32).contiguous().cpu()
        raw = t.numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    data = json.dumps(header, separators=(",", ":")).encode()
    data += b" " * ((8 - len(data) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(data)))
        f.write(data)
        for raw in blobs:
            f.write(raw)


def randn(gen, *shape, scale=1.0):
    """fp32 inputs (what the native code sees), returned as float64 for exact references."""
    return (torch.randn(*shape, generator=gen, dtype=torch.float32) * scale).to(torch.float64)
