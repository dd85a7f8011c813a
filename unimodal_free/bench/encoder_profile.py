"""Where our encoder's and HF PerceiverModel's fwd+bwd time goes: matmuls vs everything else.

    python -m unimodal_free.bench.encoder_profile [--config configs/joint.json] [--rows 32] [--compile]

Both run on the same synthetic rows as in the bench (``config_run``), under
torch.profiler, iterations alternating between them. Prints, per iteration,
the wall time, the self time of the matmul ops (``aten::mm/addmm/bmm``) and of
everything else, and the ceiling of the ours/HF speed ratio if every
non-matmul op took no time at all: the bound on what tuning anything but the
matmuls can buy at equal size and precision. ``--compile`` also times our encoder under ``torch.compile``
(inductor), the usual way to remove per-op overhead. The measurement itself is ``matmul_split.py``.
"""

from __future__ import annotations

import json
import sys

from unimodal_free import cpu_memory

cpu_memory.keep_freed_memory()  # as the trainer and the bench run

from unimodal_free.config import CONFIG_DIR  # noqa: E402
from unimodal_free.usage import ArgumentParser, usage_errors  # noqa: E402


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
    # torch loads with the profiled encoders: only once the command line is checked.
    from unimodal_free.bench import matmul_split

    result = matmul_split.profile_encoders(args.config, args.rows, args.iters, args.compile, args.threads)
    print(format_report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
