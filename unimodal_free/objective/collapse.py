"""Collapse guard (fairseq data2vec: stop when target/prediction variance dies)."""

from __future__ import annotations

import math


def check_collapse(metrics: dict, objective_cfg, step: int) -> str | None:
    """After ``collapse_warmup_steps``, a one-line message naming every (modality, metric) below threshold."""
    if step < objective_cfg.collapse_warmup_steps:
        return None
    limits = {"target_std": ("min_target_std", objective_cfg.min_target_std),
              "pred_std": ("min_pred_std", objective_cfg.min_pred_std)}
    problems = []
    for key in sorted(metrics):
        metric, _, modality = key.partition("/")
        if metric not in limits or not modality:
            continue
        value = float(metrics[key])
        name, threshold = limits[metric]
        if math.isnan(value) or value < threshold:
            problems.append(f"{metric} of modality {modality!r} is {value:.4g} < objective.{name}={threshold}")
    if not problems:
        return None
    return (f"representation collapse at step {step}: {'; '.join(problems)} "
            f"(checked after objective.collapse_warmup_steps={objective_cfg.collapse_warmup_steps})")
