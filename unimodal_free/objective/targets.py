"""data2vec targets from the teacher's full-input pass."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unimodal_free.batch import Batch, split_rows
from unimodal_free.model.joint import JointModel
from unimodal_free.objective.masking import MaskedView


def average_top_k(layers: list[torch.Tensor], top_k: int, instance_norm: bool, final_layer_norm: bool) -> torch.Tensor:
    """Mean of the last ``top_k`` block outputs (B, N, D), each instance-normalised over the N axis.

    data2vec's ``F.instance_norm(tl.transpose(1, 2))``: per sample and channel,
    zero mean and unit variance across the latent slots.
    """
    if not 0 < top_k <= len(layers):
        raise ValueError(f"objective.top_k: {top_k} not in [1, {len(layers)}] (the encoder's blocks)")
    y = 0
    for x in layers[-top_k:]:
        x = x.float()
        if instance_norm:
            x = F.instance_norm(x.transpose(1, 2)).transpose(1, 2)  # (B, N, D), normalised over N
        y = y + x
    y = y / top_k
    if final_layer_norm:
        y = F.layer_norm(y, y.shape[-1:])
    return y  # (B, N, D)


@torch.no_grad()
def teacher_layers(teacher: JointModel, batch: Batch) -> list[torch.Tensor]:
    """The teacher's one pass over the full input: every latent block's output, each (sum B_m, N, D)."""
    return teacher.encode(batch.parts)


@torch.no_grad()
def teacher_targets(teacher: JointModel, batch: Batch, views: dict[str, MaskedView], objective_cfg,
                    layers: list[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """One teacher pass on the full input -> per-modality targets for all R views.

    latents: (B_m*R, N, D), the averaged target latents repeated for each view
    (data2vec 2.0 ``clone_batch``: ``repeat_interleave``). elements: the
    teacher's readout of those latents at each view's masked positions,
    (B_m*R, T, D). ``layers``: :func:`teacher_layers` when the caller already ran it.
    """
    if layers is None:
        layers = teacher_layers(teacher, batch)
    y = average_top_k(layers, objective_cfg.top_k, objective_cfg.instance_norm, objective_cfg.final_layer_norm)
    y_parts = split_rows(y, batch.parts)  # (sum B_m, N, D) -> {m: (B_m, N, D)}
    targets = {}
    for name, v in views.items():
        latents = y_parts[name].repeat_interleave(v.num_views, dim=0)  # (B_m*R, N, D)
        if objective_cfg.target_space == "latents":
            targets[name] = latents
        else:
            t = teacher.readout(name, latents, v.target_coords).float()  # (B_m*R, T, D)
            if objective_cfg.final_layer_norm:
                t = F.layer_norm(t, t.shape[-1:])
            targets[name] = t
    return targets


@torch.no_grad()
def pooled_targets(teacher: JointModel, layers: list[torch.Tensor], batch: Batch, modalities: list[str]
                   ) -> dict[str, torch.Tensor]:
    """The cross-modal targets: per modality (B_m, D), the teacher's normalised final latents averaged over
    the slots (what ``pooled_embedding`` pools), layer-normalised; a modality absent from ``batch``: 0 rows.

    Not the data2vec targets averaged: those are instance-normalised over the slots, so their slot mean is 0.
    """
    final = teacher.norm(layers[-1]).float().mean(1)  # (sum B_m, D)
    pooled = split_rows(F.layer_norm(final, final.shape[-1:]), batch.parts)  # {m: (B_m, D)}
    return {m: pooled[m] if m in pooled else final.new_zeros(0, final.shape[-1]) for m in modalities}
