"""Pooled embedding: the one function behind training-time probes and retrieval eval."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from unimodal_free.batch import Batch, split_rows
from unimodal_free.config import alignment_on
from unimodal_free.model.joint import unwrap


@torch.no_grad()
def pooled_embedding(model: nn.Module, batch: Batch, project: bool = True, block: int | None = None
                     ) -> dict[str, torch.Tensor]:
    """Mean of the final latents over the N slots of the *unmasked* input, L2-normalised.

    ``model`` is a student or teacher (or a wrapper with ``.module``).
    ``project=True`` applies the alignment projection when the model has one
    (objective.align_weight > 0); without it the pooled latents are returned.
    ``block=i`` pools latent block i's output instead (0-based, as ``encode`` lists them; no final norm,
    no projection): what a probe of an intermediate depth reads.
    Returns {modality: (rows, D or align_dim)} in ``batch.parts`` order.
    """
    model = unwrap(model)
    if not batch.parts:
        return {}
    if block is not None:
        layers = model.encode(batch.parts)
        if not 0 <= block < len(layers):
            raise ValueError(f"block {block}: the encoder has latent blocks 0..{len(layers) - 1}")
        latents = layers[block]  # (rows, N, D)
        project = False
    else:
        latents = model.final(batch.parts)  # (rows, N, D)
    pooled = split_rows(latents.mean(1), batch.parts)  # (rows, D) -> {m: (B_m, D)}
    if project and model.align is not None:
        pooled = {name: model.align.embed(name, z) for name, z in pooled.items()}  # (B_m, A)
    return {name: F.normalize(z.float(), dim=-1) for name, z in pooled.items()}


def embedding_dim(model_cfg, objective_cfg) -> int:
    """Width of :func:`pooled_embedding` with ``project=True``: the alignment projection's when the model has one."""
    return objective_cfg.align_dim if alignment_on(objective_cfg) else model_cfg.d_model
