"""Wall-clock timing with warm-up and medians, the way every figure here is taken."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def sync(device: torch.device) -> None:
    """Wait for queued GPU work so a timer measures the work, not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], object], warmup: int, repeats: int, device: torch.device | str = "cpu") -> dict:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times; return median/min/all seconds."""
    device = torch.device(device)
    if repeats < 1:
        raise ValueError(f"repeats: must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "times_s": times,
        "warmup": warmup,
        "repeats": repeats,
    }


def setup_threads(threads: int | None, device: torch.device) -> int:
    """Pin the intra-op thread count on CPU (shared 2-core machines); returns what is in force."""
    if device.type == "cpu" and threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def pick_device(name: str | None = None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def time_interleaved(fns: dict[str, Callable[[], object]], warmup: int, repeats: int,
                     device: torch.device | str = "cpu") -> dict[str, dict]:
    """Time several closures in alternation (A B A B ...), so load from other processes hits all alike.

    Ratios between the medians are what a comparison reports; interleaving keeps
    them honest on a shared machine where absolute times drift.
    """
    device = torch.device(device)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {
        name: {"median_s": statistics.median(t), "min_s": min(t), "times_s": t, "warmup": warmup,
               "repeats": repeats, "interleaved": True}
        for name, t in times.items()
    }
