"""Model FLOPs utilisation: analytic step FLOPs / step time / measured matmul peak.

The peak is measured once at start with a short best-of-sizes matmul probe
(in the training precision: fp32, or bf16 on hardware that has it) instead of trusting a datasheet, so MFU on a
laptop CPU and on an H100 mean the same thing: the share of what this
device's matmul actually reaches.
"""

from __future__ import annotations

import time

import torch


def measure_matmul_peak(
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    sizes: tuple[int, ...] | None = None,
    budget_s: float = 1.5,
) -> float:
    """Best observed FLOP/s of square matmuls on ``device`` (within ~``budget_s`` seconds)."""
    device = torch.device(device)
    if dtype is None:  # what a mixed-precision GPU run uses; fp32 on CPU
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if sizes is None:
        sizes = (1024, 2048, 4096, 8192) if device.type == "cuda" else (256, 512, 1024)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    best = 0.0
    # Own generator: the number of sizes tried depends on timing, so the global RNG must not be touched.
    gen = torch.Generator(device=device).manual_seed(0)
    start = time.perf_counter()
    per_size = budget_s / len(sizes)
    for n in sizes:
        if time.perf_counter() - start > budget_s / 2:
            break  # larger sizes would overrun the budget on a slow device
        a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
        b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
        a @ b  # warm-up
        sync()
        t_size = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            a @ b
            sync()
            dt = time.perf_counter() - t0
            if dt > 0:
                best = max(best, 2.0 * n**3 / dt)
            if time.perf_counter() - t_size > per_size / 2:
                break
    return best


def mfu(step_flops: float, step_time_s: float, peak_flops: float) -> float:
    if step_time_s <= 0 or peak_flops <= 0:
        return 0.0
    return step_flops / step_time_s / peak_flops
