"""Which frozen features a probe or a zero-shot classifier reads: ``head``, ``pooled`` or ``block:N``.

All three are one call of :func:`~unimodal_free.model.pooled_embedding` (mean over the latent slots,
L2-normalised), so shards and prompts embed alike:

    head     the alignment head's projection (what retrieval compares; the pooled latents when the
             run trained no head)
    pooled   the pooled final latents (after the final norm, before the head)
    block:N  the mean of latent block N's output (0-based; the teacher's targets average the top-K of these)
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch

from unimodal_free.model import pooled_embedding

EmbedFn = Callable[[torch.nn.Module, object], dict[str, torch.Tensor]]
CHOICES = "head, pooled or block:N"


def parse_features(spec: str, num_blocks: int) -> EmbedFn:
    """``embed_fn(model, batch) -> {m: (rows, D)}`` for ``spec``; ValueError naming the valid choices."""
    if spec == "head":
        return partial(pooled_embedding, project=True)
    if spec == "pooled":
        return partial(pooled_embedding, project=False)
    name, _, index = spec.partition(":")
    if name == "block" and index.lstrip("-").isdigit():
        block = int(index)
        if not 0 <= block < num_blocks:
            raise ValueError(f"--features {spec}: this model has latent blocks 0..{num_blocks - 1}")
        return partial(pooled_embedding, block=block)
    raise ValueError(f"--features {spec!r}: not one of {CHOICES}")
