"""What the experiments read off a finished run beyond its retrieval table: logged losses, parameter counts.

Eval results are read through :func:`unimodal_free.experiments.results.metric`, the one place that knows
their format.
"""

from __future__ import annotations

from pathlib import Path

import torch

from unimodal_free.experiments.results import metric

TAIL_POINTS = 5  # logged points averaged for a run's "final" loss (log_every apart: the last 50 steps at 10)


def recall(results: dict, direction: str, k: int = 1, chance: bool = False) -> float:
    """R@k (or its chance level) of one direction ``{a}_to_{b}`` from an eval result (NaN when not scored)."""
    value = metric(results, direction, f"chance_R@{k}" if chance else f"R@{k}")
    return float("nan") if value is None else value


def tail_mean(run_dir: Path, tag: str, points: int = TAIL_POINTS) -> float:
    """Mean of the last ``points`` values of a TensorBoard scalar of the run (NaN when never logged)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # heavy: only here

    ea = EventAccumulator(str(Path(run_dir) / "tb"), size_guidance={"scalars": 0})
    ea.Reload()
    if tag not in ea.Tags()["scalars"]:
        return float("nan")
    values = [e.value for e in ea.Scalars(tag)][-points:]
    return sum(values) / len(values)


def latent_stack_share(model: torch.nn.Module) -> tuple[int, int]:
    """(all parameters, those of the latent blocks) of a model."""
    total = stack = 0
    for name, p in model.named_parameters():
        total += p.numel()
        if name.startswith(("encoder.blocks.", "encoder.stacks.")):
            stack += p.numel()
    return total, stack


def fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"
