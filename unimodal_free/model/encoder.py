"""Perceiver encoder: N learned latents read the elements, then L latent blocks.

Cost is O(M N) for the cross-attention and O(L N^2) for the latent stack, so
it grows linearly with input length, and every modality lands in the same
``(rows, N, D)`` latent array.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from unimodal_free.model.layers import CrossBlock, LatentBlock


class PerceiverEncoder(nn.Module):
    def __init__(self, d_model: int, num_latents: int, num_blocks: int, num_heads: int, cross_heads: int,
                 mlp_ratio: float, dropout: float = 0.0):
        super().__init__()
        for name, value in (("model.num_latents", num_latents), ("model.num_blocks", num_blocks)):
            if value <= 0:
                raise ValueError(f"encoder: {name} must be > 0, got {value}")
        self.latents = nn.Parameter(torch.randn(num_latents, d_model) * 0.02)
        self.cross = CrossBlock(d_model, cross_heads, mlp_ratio, dropout)
        self.blocks = nn.ModuleList(LatentBlock(d_model, num_heads, mlp_ratio, dropout) for _ in range(num_blocks))

    def forward(self, inputs: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        """inputs: per sub-batch (elements (B_m, M_m, D), padding (B_m, M_m)).

        Each sub-batch is cross-attended to its own elements (no padding across
        modalities); the resulting latents are concatenated along the batch
        axis and the latent stack runs once. Returns every block's output,
        each ``(sum B_m, N, D)``, in input order.
        """
        latents = []
        for x, padding in inputs:
            q = self.latents.expand(x.shape[0], -1, -1)  # (B_m, N, D)
            latents.append(self.cross(q, x, padding))
        z = torch.cat(latents, dim=0) if len(latents) > 1 else latents[0]  # (B, N, D)
        outputs = []
        for block in self.blocks:
            z = block(z)
            outputs.append(z)
        return outputs
