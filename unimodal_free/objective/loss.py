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


def compute_loss(student: nn.Module, teacher_module: nn.Module, batch: Batch, cfg, generator: torch.Generator,
                 gather_fn=None, sum_fn=None) -> LossOutput:
    """data2vec loss of the student's R masked views against one teacher pass, plus optional alignment.

    Modalities are weighted by their rows (each row counts the same whatever
    its element count). Metrics: ``loss/{m}``, ``target_std/{m}``,
    ``pred_std/{m}``, ``masked_fraction/{m}``, ``padding_fraction``,
    ``loss/data2vec``, ``align_loss`` and (alignment on) ``temperature``.
    ``gather_fn`` (negatives) and ``sum_fn`` (normalisation statistics): the
    alignment's cross-rank collectives, see :mod:`unimodal_free.model.alignment`.
    """
    obj = cfg.objective
    if not batch.parts:
        raise ValueError("compute_loss: the batch has no rows")
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
    total, weight = 0.0, 0
    for name, v in views.items():
        pred, target = out.predictions[name].float(), targets[name]
        valid = None if obj.target_space == "latents" else ~v.target_padding  # (B*R, T)
        err = regression_error(pred, target, obj)  # (B*R, N or T)
        if valid is None:
            loss_m = err.mean()
            rows = v.rows
        else:
            rows = int(valid.any(1).sum())
            loss_m = (err * valid).sum() / valid.sum().clamp(min=1)
        if rows:
            total = total + loss_m * rows
            weight += rows
        metrics[f"loss/{name}"] = loss_m.detach()
        first_view = target[:: v.num_views] if valid is None else target  # latents targets repeat per view
        t_std = across_sample_std(first_view, valid)
        p_std = across_sample_std(pred.detach(), valid)
        if t_std is not None:
            metrics[f"target_std/{name}"] = t_std
            metrics[f"pred_std/{name}"] = p_std
        real = (~batch.parts[name].padding).sum() * v.num_views
        metrics[f"masked_fraction/{name}"] = v.mask.sum() / real
    d2v = total / max(weight, 1) if weight else out.predictions[next(iter(views))].sum() * 0.0
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
