"""Retrieval results as flat metrics (TensorBoard / trainer), an aligned table and JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from unimodal_free.eval.retrieval import KS

# Per-direction scalars worth a TensorBoard curve.
FLAT_KEYS = tuple(f"R@{k}" for k in KS) + ("median_rank", "mean_rank")


def flat_metrics(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """{"image_to_text": {"R@1": ..}} -> {"image_to_text_R@1": ..} for the keys in FLAT_KEYS."""
    return {f"{direction}_{key}": float(m[key]) for direction, m in results.items() for key in FLAT_KEYS}


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """Aligned text table, recalls in percent, chance level of each recall in parentheses.

    A ``note`` column appears when a direction is flagged too small to read.
    """
    header = ["direction", "queries", "cands"] + [f"R@{k} (chance)" for k in KS] + ["medR", "meanR"]
    flagged = any(m.get("too_small") for m in results.values())
    rows = []
    for direction, m in results.items():
        rows.append(
            [direction, str(m["num_queries"]), str(m["num_candidates"])]
            + [f"{100 * m[f'R@{k}']:.1f} ({100 * m[f'chance_R@{k}']:.1f})" for k in KS]
            + [f"{m['median_rank']:g}", f"{m['mean_rank']:.1f}"]
            + ([f"too small to read (< {m['min_queries']} queries)" if m.get("too_small") else ""] if flagged else [])
        )
    if flagged:
        header.append("note")
    if not rows:
        return "no modality pair with at least two paired samples: nothing to retrieve"
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        last = len(header) - 1 if flagged else -1  # the note reads left to right
        return "  ".join(c.ljust(w) if i in (0, last) else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON, atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)


def meta_path(json_path: str | os.PathLike) -> Path:
    """results.json -> results.meta.json: what was evaluated, kept apart from the metrics."""
    p = Path(json_path)
    return p.with_name(p.stem + ".meta" + (p.suffix or ".json"))
