"""Matmul peak probe: the denominator of every MFU figure, measured in the same run.

A vendor datasheet peak says little about a shared 2-core VM or a throttled GPU;
the best square GEMM this process can reach right now is the honest ceiling.
"""

from __future__ import annotations

import torch

from unimodal_free.bench.timing import time_fn

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_peak(
    sizes: tuple[int, ...] = (1024, 2048, 4096),
    dtypes: tuple[str, ...] = ("fp32", "bf16"),
    device: torch.device | str = "cpu",
    repeats: int = 3,
    max_seconds_per_size: float = 6.0,
) -> dict:
    """Best FLOP/s of ``n x n @ n x n`` over ``sizes``, per dtype.

    Repeats of a size are cut so one size takes about ``max_seconds_per_size``
    (a 4096^3 fp32 GEMM takes ~1.5 s on 2 CPU cores).
    """
    device = torch.device(device)
    out: dict = {}
    for name in dtypes:
        dtype = DTYPES[name]
        per_size = {}
        for n in sizes:
            gen = torch.Generator(device="cpu").manual_seed(n)
            a = torch.randn(n, n, generator=gen).to(device, dtype)
            b = torch.randn(n, n, generator=gen).to(device, dtype)
            first = time_fn(lambda: a @ b, warmup=1, repeats=1, device=device)["median_s"]
            reps = max(1, min(repeats, int(max_seconds_per_size / max(first, 1e-9))))
            t = time_fn(lambda: a @ b, warmup=0, repeats=reps, device=device)
            # The best repeat: a peak is what the hardware can do, not its average under noise.
            per_size[str(n)] = 2.0 * n**3 / min(t["min_s"], first)
            del a, b
        best = max(per_size, key=per_size.get)
        out[name] = {"peak_flops": per_size[best], "best_size": int(best), "flops_by_size": per_size}
    return out
