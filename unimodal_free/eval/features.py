"""Which frozen features a probe or a zero-shot classifier reads: ``head``, ``pooled``, ``block:N`` or ``latents``.

The first three are one call of :func:`~unimodal_free.model.pooled_embedding` (mean over the latent slots,
L2-normalised), so shards and prompts embed alike:

    head     the alignment head's projection (what retrieval compares; the pooled latents when the
             run trained no head)
    pooled   the pooled final latents (after the final norm, before the head)
    block:N  the mean of latent block N's output (0-based; the teacher's targets average the top-K of these)
    latents  the final latent array unpooled, its N slots concatenated (N * D): what the mean over the
             slots may wash out (a slot that encodes where a shape's edges are, say) is still there
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch

import torch.nn.functional as F

from unimodal_free.batch import split_rows
from unimodal_free.model import pooled_embedding, unwrap

EmbedFn = Callable[[torch.nn.Module, object], dict[str, torch.Tensor]]
CHOICES = "head, pooled, block:N or latents"


def parse_features(spec: str, num_blocks: int) -> EmbedFn:
    """``embed_fn(model, batch) -> {m: (rows, D)}`` for ``spec``; ValueError naming the valid choices."""
    if spec == "head":
        return partial(pooled_embedding, project=True)
    if spec == "pooled":
        return partial(pooled_embedding, project=False)
    if spec == "latents":
        return latent_array
    name, _, index = spec.partition(":")
    if name == "block" and index.lstrip("-").isdigit():
        block = int(index)
        if not 0 <= block < num_blocks:
            raise ValueError(f"--features {spec}: this model has latent blocks 0..{num_blocks - 1}")
        return partial(pooled_embedding, block=block)
    raise ValueError(f"--features {spec!r}: not one of {CHOICES}")


def latent_array(model: torch.nn.Module, batch) -> dict[str, torch.Tensor]:
    """{m: (B_m, N * D)}: the final latents of the unmasked input, slots concatenated, L2-normalised."""
    latents = unwrap(model).final(batch.parts)  # (rows, N, D)
    flat = split_rows(latents.flatten(1), batch.parts)  # (rows, N * D) -> {m: (B_m, N * D)}
    return {m: F.normalize(z.float(), dim=-1) for m, z in flat.items()}
