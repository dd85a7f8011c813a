"""Retrieval results as flat metrics (TensorBoard / trainer), an aligned table, the eval JSON
(open_clip's flat key names) and CLIP_benchmark's result file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from unimodal_free.eval.retrieval import KS
from unimodal_free.run_dir import RunDir

# Per-direction scalars worth a TensorBoard curve; named as open_clip's get_clip_metrics names them
# ("image_to_text_R@1", fractions; "_mean_rank", "_median_rank", 1-based).
FLAT_KEYS = tuple(f"R@{k}" for k in KS) + ("median_rank", "mean_rank")
# ... and what the eval JSON adds to read them: the test set's size, chance levels, the too-small flag.
JSON_KEYS = FLAT_KEYS + ("num_queries", "num_candidates") + tuple(f"chance_R@{k}" for k in KS) + ("too_small",)


def flatten(results: dict[str, dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    """{"image_to_text": {"R@1": ..}} -> {"image_to_text_R@1": ..} for ``keys``, direction by direction."""
    return {f"{direction}_{key}": m[key] for direction, m in results.items() for key in keys}


def flat_metrics(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The TensorBoard scalars: FLAT_KEYS of every direction, as floats."""
    return {k: float(v) for k, v in flatten(results, FLAT_KEYS).items()}


def results_json(results: dict[str, dict[str, Any]], metadata: dict[str, Any]) -> dict[str, Any]:
    """The eval JSON: flat keys (JSON_KEYS of every direction present) and ``metadata``."""
    return {**flatten(results, JSON_KEYS), "metadata": metadata}


# CLIP_benchmark's zero-shot retrieval names recall by what is retrieved: "image_retrieval" = text queries
# ranking images (our text_to_image), "text_retrieval" = image queries ranking texts (image_to_text).
CLIP_BENCHMARK_DIRECTIONS = {"image_retrieval": "text_to_image", "text_retrieval": "image_to_text"}


def clip_benchmark_result(results: dict[str, dict[str, Any]], dataset: str, model: str, pretrained: str,
                          language: str) -> dict[str, Any]:
    """CLIP_benchmark's result file (``clip_benchmark eval --task zeroshot_retrieval --output``):
    {"dataset", "model", "pretrained", "task", "metrics", "language"}, recalls as fractions.

    Its retrieval task is image <-> text only, so speech directions are left to the eval JSON;
    without an image-text direction there is nothing to write (ValueError).
    """
    metrics = {
        f"{name}_recall@{k}": float(results[direction][f"R@{k}"])
        for name, direction in CLIP_BENCHMARK_DIRECTIONS.items() if direction in results for k in KS
    }
    if not metrics:
        raise ValueError(f"no image-text direction in these results ({', '.join(results) or 'none'}): "
                         "CLIP_benchmark's retrieval format holds image <-> text recall only")
    return clip_benchmark_record(dataset, model, pretrained, "zeroshot_retrieval", metrics, language)


def clip_benchmark_record(dataset: str, model: str, pretrained: str, task: str, metrics: dict[str, Any],
                          language: str) -> dict[str, Any]:
    """One result as ``clip_benchmark eval --output`` writes it (task: zeroshot_retrieval, linear_probe, ...)."""
    return {"dataset": dataset, "model": model, "pretrained": pretrained, "task": task, "metrics": metrics,
            "language": language}


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """Aligned text table, recalls in percent (the header says so), chance level of each recall in parentheses.

    A ``note`` column appears when a direction is flagged too small to read.
    """
    header = ["direction", "queries", "cands"] + [f"R@{k} % (chance %)" for k in KS] + ["medR", "meanR"]
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
    """Write ``obj`` as indented JSON, atomically (a reader never sees half a file), never through a link
    planted at its temporary name (``RunDir``)."""
    path = Path(path)
    RunDir(path.parent).write_atomic(path, json.dumps(obj, indent=2) + "\n")

