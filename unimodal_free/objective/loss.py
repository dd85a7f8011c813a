"""The data2vec regression loss: per-position error, and its balance over modalities and ranks."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def regression_error(pred: torch.Tensor, target: torch.Tensor, objective_cfg) -> torch.Tensor:
    """(..., D) -> (...): data2vec's per-position loss, summed over D and scaled by 1/sqrt(D)."""
    if objective_cfg.loss == "mse":
        err = F.mse_loss(pred, target, reduction="none")
    else:
        err = F.smooth_l1_loss(pred, target, reduction="none", beta=objective_cfg.smooth_l1_beta)
    return err.sum(-1) / math.sqrt(pred.shape[-1])


def modality_balanced_loss(sums: dict[str, torch.Tensor], counts: dict[str, torch.Tensor], modalities: list[str],
                           weights: dict[str, float], sum_fn=None) -> torch.Tensor:
    """This rank's share of the data2vec loss: per-modality means over all ranks, weighted.

    sums[m] / counts[m]: this rank's summed error and number of predicted
    positions of modality m (scalars; absent modalities have no entry).
    The loss over all ranks' rows is sum_m w_m S_m / C_m / sum_{m: C_m > 0} w_m
    with S_m, C_m summed over ranks (``weights``: objective.modality_weights,
    missing = 1.0). Returned: world x this rank's part of it, so the mean over
    ranks, which is what data parallelism's gradient averaging takes, is the
    loss (and gradient) of one process holding every rank's rows, whatever
    each rank holds. ``sum_fn``: the all-reduce SUM over ranks (None: one
    process); called once, on every rank alike (``modalities`` is the model's
    fixed list).
    """
    ref = next(iter(sums.values()))
    local = [counts[m].detach().double() if m in counts else ref.new_zeros((), dtype=torch.float64)
             for m in modalities]
    totals = torch.stack(local + [ref.new_ones((), dtype=torch.float64)])  # (K + 1,): counts, then 1 (the world)
    if sum_fn is not None:
        totals = sum_fn(totals)
    counts_all, world = totals[:-1], totals[-1]  # (K,), ()
    w = torch.tensor([float(weights.get(m, 1.0)) for m in modalities], dtype=torch.float64, device=ref.device)
    norm = (w * (counts_all > 0)).sum().clamp(min=1e-12)  # weights of the modalities some rank holds
    factor = w * world / (counts_all.clamp(min=1) * norm)  # (K,)
    return sum(sums[m] * factor[i].to(sums[m].dtype) for i, m in enumerate(modalities) if m in sums)
