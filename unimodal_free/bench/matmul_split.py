"""Matmul self time against everything else in a fwd+bwd, under torch.profiler: the work of ``encoder_profile``.

The command line is ``python -m unimodal_free.bench.encoder_profile``, which
checks its flags before this module brings torch in.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from unimodal_free.bench.config_run import peer_step
from unimodal_free.bench.ours import OursHarness
from unimodal_free.bench.peers import PeerSize
from unimodal_free.bench.synthetic import synthetic_batch
from unimodal_free.bench.timing import setup_threads, time_interleaved
from unimodal_free.config import load_config

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm")


def profile_split(fns: dict, iters: int) -> dict[str, dict]:
    """Per closure: median over iterations of wall, matmul self time and the rest (seconds).

    Iterations alternate between the closures (A B A B ...), one profiler
    session each, so load from other processes hits all alike.
    """
    samples: dict[str, list[dict]] = {name: [] for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                start = time.perf_counter()
                fn()
                wall = time.perf_counter() - start
            events = prof.key_averages()
            total = sum(e.self_cpu_time_total for e in events) / 1e6
            matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS) / 1e6
            samples[name].append({"wall_s": wall, "profiled_s": total, "matmul_s": matmul, "other_s": total - matmul})
    out = {}
    for name, rows in samples.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        med["matmul_share"] = med["matmul_s"] / med["profiled_s"] if med["profiled_s"] else 0.0
        out[name] = med
    return out


def profile_encoders(config: str, rows: int, iters: int, compile_encoder: bool, threads: int, seed: int = 0) -> dict:
    """Our encoder's and HF PerceiverModel's fwd+bwd split on the same rows; ``compile_encoder``: ours compiled too."""
    cpu = torch.device("cpu")
    setup_threads(threads, cpu)
    cfg = load_config(config)
    ours = OursHarness(cfg, cpu, seed=seed)
    batch = synthetic_batch(cfg.data, ours.specs, rows, seed=seed)
    hf = peer_step("hf_perceiver", PeerSize.from_model_config(cfg.model), batch, cpu).fn
    fns = {"ours": lambda: ours.encoder_fwd_bwd(batch), "hf_perceiver": hf}
    for fn in fns.values():  # warm-up outside the profiler
        fn()
        fn()
    result = {"config": config, "rows": rows, "iters": iters, "split": profile_split(fns, iters)}
    ours_split, hf_split = result["split"]["ours"], result["split"]["hf_perceiver"]
    # If every non-matmul op of ours took no time: HF's profiled time over our matmul time.
    result["ceiling_vs_hf"] = hf_split["profiled_s"] / ours_split["matmul_s"]
    if compile_encoder:
        eager_encoder = ours.student.encoder
        compiled_encoder = torch.compile(eager_encoder)  # a wrapper: the student keeps its eager encoder

        def compiled_fwd_bwd():
            ours.student.encoder = compiled_encoder
            try:
                ours.encoder_fwd_bwd(batch)
            finally:
                ours.student.encoder = eager_encoder

        started = time.perf_counter()
        compiled_fwd_bwd()  # compiles forward and backward
        result["compile_s"] = time.perf_counter() - started
        timed = time_interleaved({"eager": fns["ours"], "compiled": compiled_fwd_bwd}, 2, iters, cpu)
        eager, compiled = timed["eager"]["median_s"], timed["compiled"]["median_s"]
        result["compiled"] = {"eager_median_s": eager, "compiled_median_s": compiled, "speedup": eager / compiled}
    return result
