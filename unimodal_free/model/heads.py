"""Heads on top of the latent array: latent predictor and element readout.

Every parameter is owned by the module whose ``forward`` uses it, so ZeRO-3's
per-module gathering covers the whole student.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from unimodal_free.batch import ModalitySpec
from unimodal_free.model.embedding import FourierFeatures
from unimodal_free.model.layers import CrossBlock, LatentBlock


class Predictor(nn.Module):
    """``latents`` target space: student latents (B, N, D) -> predicted teacher latents (B, N, D).

    A few latent blocks and a linear head, slot by slot; fully modality-blind.
    """

    def __init__(self, d_model: int, num_blocks: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        if num_blocks < 0:
            raise ValueError(f"predictor: objective.predictor_blocks must be >= 0, got {num_blocks}")
        self.blocks = nn.ModuleList(LatentBlock(d_model, num_heads, mlp_ratio) for _ in range(num_blocks))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, d_model)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            z = block(z)
        return self.head(self.norm(z))


class Readout(nn.Module):
    """``elements`` target space: read latents out at given element positions (Perceiver IO decoder).

    Queries are Fourier features of the positions (zero-padded to the widest
    modality's width, one shared linear) plus a learned modality embedding
    ``embed_<modality>``. The cross-attention has no query residual, so the
    output is built from what the queries read, not from the query itself.
    """

    def __init__(self, specs: dict[str, ModalitySpec], d_model: int, num_heads: int, mlp_ratio: float,
                 fourier_bands: int, fourier_max_freq: float):
        super().__init__()
        self.positions = nn.ModuleDict(
            {name: FourierFeatures(spec.coord_dims, fourier_bands, fourier_max_freq) for name, spec in specs.items()}
        )
        self.query_width = max(p.width for p in self.positions.values())
        self.query = nn.Linear(self.query_width, d_model)
        for name in specs:
            self.register_parameter(f"embed_{name}", nn.Parameter(torch.randn(d_model) * 0.02))
        self.cross = CrossBlock(d_model, num_heads, mlp_ratio, query_residual=False)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, modality: str, latents: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """latents (B, N, D), coords (B, T, Dc) -> (B, T, D)."""
        pos = self.positions[modality](coords).to(latents.dtype)  # (B, T, width_m)
        pos = F.pad(pos, (0, self.query_width - pos.shape[-1]))  # (B, T, query_width)
        q = self.query(pos) + getattr(self, f"embed_{modality}")  # (B, T, D)
        return self.norm(self.cross(q, latents))
