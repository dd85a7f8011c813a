"""Step time against element count M, growth exponents, and the log-log plot.

A sweep goes up in M and stops for a method once its next size would exceed
the time budget (extrapolated from the last measured step with the method's
own exponent so far): full attention at M=16384 takes minutes on 2 cores, and
what was not measured is reported as skipped, never extrapolated into a figure.
"""

from __future__ import annotations

import math
import time
from typing import Callable

from unimodal_free.bench.timing import time_fn

# A method: M -> a zero-argument closure doing one step at that M (built outside the timer).
StepFactory = Callable[[int], Callable[[], object]]


def growth_exponent(sizes: list[int], seconds: list[float], min_size: int = 1024) -> float | None:
    """Least-squares slope of log(time) against log(M) over sizes >= ``min_size``."""
    pts = [(math.log(m), math.log(t)) for m, t in zip(sizes, seconds) if m >= min_size and t > 0]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx


def sweep(
    factory: StepFactory,
    sizes: list[int],
    warmup: int,
    repeats: int,
    max_step_seconds: float,
    device="cpu",
    always: tuple[int, ...] = (),
) -> dict:
    """Time ``factory(M)()`` for ascending ``sizes``; skip sizes predicted to exceed ``max_step_seconds``.

    Sizes in ``always`` (a headline comparison point) are measured whatever the prediction.

    Sizes whose single step is predicted to take more than 2 s get no warm-up
    of their own (the same kernels ran warm at the smaller sizes) and one repeat.
    """
    measured: list[int] = []
    seconds: list[float] = []
    skipped: list[int] = []
    details = {}
    for m in sorted(sizes):
        if measured:
            slope = growth_exponent(measured, seconds, min_size=0) if len(measured) > 1 else 1.0
            predicted = seconds[-1] * (m / measured[-1]) ** max(slope or 1.0, 1.0)
            if predicted > max_step_seconds and m not in always:
                skipped.append(m)
                continue
            slow = predicted > 2.0
        else:
            slow = False
        fn = factory(m)
        start = time.perf_counter()
        t = time_fn(fn, warmup=0 if slow else warmup, repeats=1 if slow else repeats, device=device)
        t["wall_s"] = time.perf_counter() - start
        del fn
        measured.append(m)
        seconds.append(t["median_s"])
        details[str(m)] = t
    return {
        "sizes": measured,
        "seconds": seconds,
        "skipped": skipped,
        "max_step_seconds": max_step_seconds,
        "details": details,
        "growth_exponent": growth_exponent(measured, seconds),
    }


def plot(results: dict[str, dict], path: str, title: str) -> None:
    """Log-log plot of step time against M, one line per method, exponent in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name, res in results.items():
        if not res["sizes"]:
            continue
        exp = res.get("growth_exponent")
        label = f"{name} (slope {exp:.2f}, M>=1024)" if exp is not None else name
        ax.plot(res["sizes"], res["seconds"], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("elements per sample M")
    ax.set_ylabel("seconds per step (median)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
