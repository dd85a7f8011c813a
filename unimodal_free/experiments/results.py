"""Reading retrieval results and laying them out: the one place that knows ``evaluate_arm``'s format.

``evaluate_arm`` returns ``{"{a}_to_{b}": {"R@1": .., "R@10": .., "chance_R@1": .., ...}}``;
if that format changes, only :func:`metric` changes.
"""

from __future__ import annotations

from typing import Optional, Sequence

from unimodal_free.modalities import MODALITIES

DIRECTIONS = tuple(f"{a}_to_{b}" for a in MODALITIES for b in MODALITIES if a != b)


def metric(results: dict, direction: str, name: str) -> Optional[float]:
    """One number of one direction (``name``: ``R@1``, ``R@10``, ``chance_R@1``, ``num_queries``...);
    None when the direction was not scored (too few pairs of its modalities)."""
    value = results.get(direction, {}).get(name)
    return None if value is None else float(value)


def mean_metric(results: dict, name: str, directions: Sequence[str] = DIRECTIONS) -> Optional[float]:
    """The mean over ``directions``; None when one of them was not scored."""
    values = [metric(results, d, name) for d in directions]
    return None if any(v is None for v in values) else sum(values) / len(values)


def arrow(direction: str) -> str:
    """'speech_to_image' -> 'speech->image'."""
    return direction.replace("_to_", "->")


def pct(value: Optional[float]) -> str:
    """A recall as a percentage with one decimal ('-' when missing)."""
    return "-" if value is None else f"{100 * value:.1f}"


def seconds(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.0f}"


def markdown(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"
