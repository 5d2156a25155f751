"""Times the benchmark's operations in PyTorch or NumPy, whichever is importable, so that
`npm run bench` can print lora-train's figures beside a peer measured in the same run.
Reads a JSON list of cases on stdin, writes one JSON object per case on stdout."""
import json
import os
import statistics
import sys
import time

try:
    import numpy as np
except ImportError:
    np = None
try:
    import torch
except ImportError:
    torch = None


def timed(fn, min_seconds):
    fn()  # warm-up
    times = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def loaded_blas():
    """The BLAS library this process actually mapped (NumPy's own config may only say 'blas')."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line[line.index("/"):].strip() for line in maps if "/" in line}
    except OSError:
        return ""
    for key in ("openblas", "mkl_rt", "blis", "libblas"):
        for path in sorted(paths):
            if key in path.lower():
                return path
    return ""


def numpy_impl():
    blas = loaded_blas()
    return f"numpy {np.__version__}" + (f" ({blas})" if blas else "")


def gemm(case, min_seconds):
    M, N, K = case["M"], case["N"], case["K"]
    if np is not None:
        rng = np.random.default_rng(0)
        a = rng.standard_normal((M, K), dtype=np.float32)
        b = rng.standard_normal((K, N), dtype=np.float32)
        return numpy_impl(), timed(lambda: a @ b, min_seconds)
    a, b = torch.randn(M, K), torch.randn(K, N)
    return f"torch {torch.__version__}", timed(lambda: a @ b, min_seconds)


def attention(case, min_seconds):
    B, H, N, M, d = case["B"], case["H"], case["N"], case["M"], case["d"]
    scale = d ** -0.5
    if torch is not None:
        torch.manual_seed(0)
        q = torch.randn(B, H, N, d, requires_grad=True)
        k = torch.randn(B, H, M, d, requires_grad=True)
        v = torch.randn(B, H, M, d, requires_grad=True)
        do = torch.randn(B, H, N, d)

        def step():
            o = torch.softmax((q @ k.transpose(-1, -2)) * scale, dim=-1) @ v
            o.backward(do)
            q.grad = k.grad = v.grad = None

        return f"torch {torch.__version__} matmul-softmax-matmul", timed(step, min_seconds)
    rng = np.random.default_rng(0)
    q, do = (rng.standard_normal((B, H, N, d), dtype=np.float32) for _ in range(2))
    k, v = (rng.standard_normal((B, H, M, d), dtype=np.float32) for _ in range(2))

    def step():
        s = (q @ k.transpose(0, 1, 3, 2)) * scale
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        o = p @ v
        dv = p.transpose(0, 1, 3, 2) @ do
        dp = do @ v.transpose(0, 1, 3, 2)
        ds = p * (dp - (dp * p).sum(-1, keepdims=True))
        dq = (ds @ k) * scale
        dk = (ds.transpose(0, 1, 3, 2) @ q) * scale
        return o, dq, dk, dv

    return numpy_impl() + " matmul-softmax-matmul", timed(step, min_seconds)


def main():
    if torch is not None:
        torch.set_num_threads(os.cpu_count() or 1)
    cases = json.load(sys.stdin)
    for case in cases:
        impl, seconds = {"gemm": gemm, "attention": attention}[case["kind"]](case, case.get("minSeconds", 1.0))
        print(json.dumps({"id": case["id"], "impl": impl, "seconds": seconds}), flush=True)


if __name__ == "__main__":
    if np is None and torch is None:
        sys.exit("neither numpy nor torch is importable")
    main()
