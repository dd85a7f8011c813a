"""One training step's loss: masked views -> student, full input -> teacher, regression + alignment."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from unimodal_free.batch import Batch
from unimodal_free.masking import MaskedView, make_views, mask_spec
from unimodal_free.model.joint import unwrap
from unimodal_free.objective.targets import teacher_targets


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar, what the optimizer minimises
    metrics: dict[str, torch.Tensor]  # detached scalars (see compute_loss)


def make_all_views(batch: Batch, cfg, generator: torch.Generator) -> dict[str, MaskedView]:
    """R = cfg.objective.num_views masked views of every modality sub-batch."""
    return {name: make_views(part, mask_spec(cfg.masking, name), cfg.objective.num_views, generator)
            for name, part in batch.parts.items()}


def regression_error(pred: torch.Tensor, target: torch.Tensor, objective_cfg) -> torch.Tensor:
    """(..., D) -> (...): data2vec's per-position loss, summed over D and scaled by 1/sqrt(D)."""
    if objective_cfg.loss == "mse":
        err = F.mse_loss(pred, target, reduction="none")
    else:
        err = F.smooth_l1_loss(pred, target, reduction="none", beta=objective_cfg.smooth_l1_beta)
    return err.sum(-1) / math.sqrt(pred.shape[-1])


def across_sample_std(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor | None:
    """Std over rows of each row's target, averaged over features (None with < 2 rows).

    A row's target is its slot array (latents: slots correspond across
    samples) or its mean over predicted positions (elements: positions differ
    per sample). Zero means every sample gets the same target: collapse.
    """
    if valid is not None:
        w = valid.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        keep = valid.any(1)
        x = ((x * w).sum(1) / w.sum(1).clamp(min=1))[keep]  # (B', D)
    if x.shape[0] < 2:
        return None
    return x.std(dim=0).mean()


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


def compute_loss(student: nn.Module, teacher_module: nn.Module, batch: Batch, cfg, generator: torch.Generator | None,
                 gather_fn=None, sum_fn=None, views: dict[str, MaskedView] | None = None) -> LossOutput:
    """data2vec loss of the student's R masked views against one teacher pass, plus optional alignment.

    Each modality's loss is its mean over its predicted positions on all
    ranks, and the data2vec loss their ``objective.modality_weights`` mean
    (:func:`modality_balanced_loss`). Metrics: ``loss/{m}``, ``target_std/{m}``,
    ``pred_std/{m}``, ``masked_fraction/{m}``, ``padding_fraction``,
    ``loss/data2vec``, ``align_loss`` and (alignment on) ``temperature``.
    ``gather_fn`` (negatives) and ``sum_fn`` (normalisation statistics, and
    the per-modality counts of the data2vec loss): the cross-rank
    collectives, see :mod:`unimodal_free.model.alignment`. ``views``: the
    masked views to use instead of drawing them from ``generator`` (the same
    masks split over ranks or held by one process).
    """
    obj = cfg.objective
    if not batch.parts:
        raise ValueError("compute_loss: the batch has no rows")
    if views is None:
        views = make_all_views(batch, cfg, generator)
    targets = teacher_targets(unwrap(teacher_module), batch, views, obj)
    align_on = obj.align_weight > 0
    out = student(
        views,
        pair_index={name: p.pair_index for name, p in batch.parts.items()} if align_on else None,
        full=batch.parts if align_on and obj.align_input == "full" else None,
        gather_fn=gather_fn,
        sum_fn=sum_fn,
    )
    metrics: dict[str, torch.Tensor] = {}
    sums, counts = {}, {}
    for name, v in views.items():
        pred, target = out.predictions[name].float(), targets[name]
        valid = None if obj.target_space == "latents" else ~v.target_padding  # (B*R, T)
        err = regression_error(pred, target, obj)  # (B*R, N or T)
        if valid is None:
            sums[name], counts[name] = err.sum(), torch.tensor(err.numel(), device=err.device)
        else:
            sums[name], counts[name] = (err * valid).sum(), valid.sum()
        loss_m = sums[name] / counts[name].clamp(min=1)  # this rank's mean
        metrics[f"loss/{name}"] = loss_m.detach()
        first_view = target[:: v.num_views] if valid is None else target  # latents targets repeat per view
        t_std = across_sample_std(first_view, valid)
        p_std = across_sample_std(pred.detach(), valid)
        if t_std is not None:
            metrics[f"target_std/{name}"] = t_std
            metrics[f"pred_std/{name}"] = p_std
        real = (~batch.parts[name].padding).sum() * v.num_views
        metrics[f"masked_fraction/{name}"] = v.mask.sum() / real
    d2v = modality_balanced_loss(sums, counts, unwrap(student).modalities, obj.modality_weights, sum_fn)
    loss = d2v + out.absent_term  # + 0.0: absent modalities' parameters get a zero gradient
    metrics["loss/data2vec"] = d2v.detach()
    metrics["padding_fraction"] = torch.tensor(batch.padding_waste())
    if out.align_loss is not None:
        loss = loss + obj.align_weight * out.align_loss
        metrics["align_loss"] = out.align_loss.detach()
        metrics["temperature"] = 1.0 / out.logit_scale
    else:
        metrics["align_loss"] = torch.zeros(())
    return LossOutput(loss, metrics)
