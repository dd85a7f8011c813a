"""Collapse guard (fairseq data2vec: stop when target/prediction variance dies).

The spread is judged from sums, not from per-step values: each step adds
every row's (count, sum, sum of squares) per modality (:func:`row_moments`),
the trainer sums them over the log interval and over all ranks, and
:func:`std_from_moments` turns the total into the across-sample std. A
modality with one row in a step (std 0) or none (undefined) then weighs by
its rows, and one with too few rows in the whole interval is not judged at
all (``objective.collapse_min_rows``): a small sample is not a collapse.
"""

from __future__ import annotations

import math

import torch


def row_moments(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """(count, sum, sum of squares) over rows of each row's target, as one float64 vector (1 + 2F,).

    A row's target is its slot array (latents: slots correspond across
    samples, ``x`` (B, N, D), F = N*D) or its mean over predicted positions
    (elements: positions differ per sample, ``valid`` (B, T), F = D; rows
    without a valid position do not count). Device-side, no host read.
    """
    if valid is None:
        rows = x.flatten(1).double()  # (B, F)
        count = x.new_full((1,), x.shape[0], dtype=torch.float64)
    else:
        w = valid.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        keep = valid.any(1).unsqueeze(-1).double()  # (B, 1)
        rows = ((x * w).sum(1) / w.sum(1).clamp(min=1)).double() * keep  # (B, D), 0 for rows not kept
        count = keep.sum().reshape(1)
    return torch.cat([count, rows.sum(0), (rows * rows).sum(0)])


def std_from_moments(moments: torch.Tensor) -> torch.Tensor:
    """Across-sample std (unbiased), averaged over features, from :func:`row_moments` sums.

    float64 sums keep the one-pass variance from cancelling. NaN with fewer than 2 rows.
    """
    n = moments[0]
    features = (moments.shape[0] - 1) // 2
    mean = moments[1 : 1 + features] / n  # (F,)
    var = (moments[1 + features :] / n - mean * mean).clamp_min(0.0) * n / (n - 1)  # (F,)
    return var.sqrt().mean()


def check_collapse(metrics: dict, objective_cfg, step: int, rows: dict[str, float] | None = None) -> str | None:
    """After ``collapse_warmup_steps``, a one-line message naming every (modality, metric) below threshold.

    ``rows``: rows each modality had behind its statistics (the trainer: the
    log interval over all ranks); a modality with fewer than
    ``objective.collapse_min_rows`` is not judged. None: judge every metric given.
    """
    if step < objective_cfg.collapse_warmup_steps:
        return None
    limits = {"target_std": ("min_target_std", objective_cfg.min_target_std),
              "pred_std": ("min_pred_std", objective_cfg.min_pred_std)}
    problems = []
    for key in sorted(metrics):
        metric, _, modality = key.partition("/")
        if metric not in limits or not modality:
            continue
        if rows is not None and rows.get(modality, 0) < objective_cfg.collapse_min_rows:
            continue
        value = float(metrics[key])
        name, threshold = limits[metric]
        if math.isnan(value) or value < threshold:
            problems.append(f"{metric} of modality {modality!r} is {value:.4g} < objective.{name}={threshold}")
    if not problems:
        return None
    return (f"representation collapse at step {step}: {'; '.join(problems)} "
            f"(checked after objective.collapse_warmup_steps={objective_cfg.collapse_warmup_steps})")
