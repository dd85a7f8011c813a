"""Where our encoder's and HF PerceiverModel's fwd+bwd time goes: matmuls vs everything else.

    python -m unimodal_free.bench.encoder_profile [--config configs/joint.json] [--rows 32] [--compile]

Both run on the same synthetic rows as in the bench (``config_run``), under
torch.profiler, iterations alternating between them. Prints, per iteration,
the wall time, the self time of the matmul ops (``aten::mm/addmm/bmm``) and of
everything else, and the ceiling of the ours/HF speed ratio if every
non-matmul op took no time at all: the bound on what tuning anything but the
matmuls can buy at equal size and precision. ``--compile`` also times our encoder under ``torch.compile``
(inductor), the usual way to remove per-op overhead.
"""

from __future__ import annotations

import json
import sys
import time

from unimodal_free import cpu_memory

cpu_memory.keep_freed_memory()  # as the trainer and the bench run

from unimodal_free.config import CONFIG_DIR  # noqa: E402
from unimodal_free.usage import ArgumentParser, usage_errors  # noqa: E402

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm")


def profile_split(fns: dict, iters: int) -> dict[str, dict]:
    """Per closure: median over iterations of wall, matmul self time and the rest (seconds).

    Iterations alternate between the closures (A B A B ...), one profiler
    session each, so load from other processes hits all alike.
    """
    import statistics

    from torch.profiler import ProfilerActivity, profile

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


def run(config: str, rows: int, iters: int, compile_encoder: bool, threads: int, seed: int = 0) -> dict:
    from unimodal_free.bench.config_run import peer_step
    from unimodal_free.bench.ours import OursHarness
    from unimodal_free.bench.peers import PeerSize
    from unimodal_free.bench.synthetic import synthetic_batch
    from unimodal_free.bench.timing import setup_threads, time_interleaved
    from unimodal_free.config import load_config

    import torch

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


def format_report(r: dict) -> str:
    lines = [f"{r['config']}, {r['rows']} rows, fwd+bwd per iteration (median of {r['iters']}, alternating):"]
    for name, s in r["split"].items():
        lines.append(f"  {name:<13} wall {s['wall_s'] * 1e3:7.1f} ms | matmul {s['matmul_s'] * 1e3:7.1f} ms "
                     f"({s['matmul_share']:.0%} of profiled) | other {s['other_s'] * 1e3:6.1f} ms")
    lines.append(f"  ours/HF ceiling with every non-matmul op free: {r['ceiling_vs_hf']:.2f}x")
    if "compiled" in r:
        c = r["compiled"]
        lines.append(f"  torch.compile(encoder): {r['compile_s']:.0f} s to compile; eager {c['eager_median_s'] * 1e3:.1f} ms"
                     f" -> compiled {c['compiled_median_s'] * 1e3:.1f} ms ({c['speedup']:.2f}x)")
    return "\n".join(lines)


@usage_errors()
def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m unimodal_free.bench.encoder_profile", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(CONFIG_DIR / "joint.json"))
    p.add_argument("--rows", type=int, default=32)
    p.add_argument("--iters", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="also time our encoder under torch.compile")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    result = run(args.config, args.rows, args.iters, args.compile, args.threads)
    print(format_report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
