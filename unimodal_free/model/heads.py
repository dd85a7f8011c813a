"""Heads on top of the latent array: latent predictor, element readout, alignment projection,
cross-modal predictor.

Every parameter is owned by the module whose ``forward`` uses it, so ZeRO-3's
per-module gathering covers the whole student.
"""

from __future__ import annotations

import math

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


class AlignmentProjection(nn.Module):
    """Pooled latents -> the shared, L2-normalised alignment space (CLIP-style projection head).

    A per-modality BatchNorm (no affine, ``norm_<modality>``) of the pooled
    latents, then ``proj`` to ``align_dim``. The norm is what lets alignment
    learn at small batches: without it the fastest way down from a random
    start (loss above ln P) is to make every pooled vector alike (a common
    component grows, within-modality cosine -> 0.999) and InfoNCE then sits at
    exactly ln P with no gradient left to leave it (measured on the demo
    data: chance at every lr 1e-4..1e-3, temperature 0.07..0.5). Per-modality
    centring and scaling keeps the across-sample spread at unit scale, so that
    collapse cannot happen, and also removes each modality's own offset (the
    modality gap). Training normalises with the statistics of the whole batch
    over all ranks (``objective.alignment.batch_moments``, which also moves
    the running statistics), retrieval with the running ones (MoCo v3 /
    SimCLR heads). ``logit_scale`` is a learnable log inverse temperature,
    clamped to log(100) as in CLIP. Lives in the model (not the objective)
    because the retrieval embedding uses it too.
    """

    def __init__(self, d_model: int, align_dim: int, init_temperature: float, modalities: list[str] = ()):
        super().__init__()
        if align_dim <= 0:
            raise ValueError(f"alignment: objective.align_dim must be > 0, got {align_dim}")
        if not init_temperature > 0:
            raise ValueError(f"alignment: objective.init_temperature must be > 0, got {init_temperature}")
        for name in modalities:
            self.add_module(f"norm_{name}", nn.BatchNorm1d(d_model, affine=False))
        self.proj = nn.Linear(d_model, align_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def embed(self, modality: str, pooled: torch.Tensor,
              moments: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """pooled (B, D) -> projected (B, A), not yet L2-normalised.

        Normalised with ``moments`` (mean, biased var) (D,) (training: the
        batch's) or, when None, the running statistics, so a retrieval
        embedding never depends on its batch.
        """
        norm = getattr(self, f"norm_{modality}")
        if moments is None:
            mean, var = norm.running_mean.float(), norm.running_var.float()
        else:
            mean, var = moments
        normed = (pooled.float() - mean) * torch.rsqrt(var + norm.eps)  # (B, D)
        return self.proj(normed.to(pooled.dtype))

    def forward(self, pooled: dict[str, torch.Tensor], moments: dict[str, tuple[torch.Tensor, torch.Tensor]]
                ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """pooled[m] (B_m, D) -> ({m: L2-normalised projection (B_m, A)}, inverse temperature).

        ``moments[m]``: see :meth:`embed` (missing: the running statistics).
        The alignment loss's one call into the head: ``logit_scale`` is this
        module's own parameter, so ZeRO-3 gathers it for this forward.
        """
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        return {m: F.normalize(self.embed(m, p, moments.get(m)), dim=-1) for m, p in pooled.items()}, scale


class CrossPredictor(nn.Module):
    """Pooled student latents of one modality -> the pooled teacher latents of another (B, D) -> (B, D).

    One linear head per ordered pair of modalities (``<source>_to_<target>``):
    what a picture's latents say about its caption is not what a caption's say
    about its picture.
    """

    def __init__(self, d_model: int, modalities: list[str]):
        super().__init__()
        self.heads = nn.ModuleDict({direction(a, b): nn.Linear(d_model, d_model)
                                    for a in modalities for b in modalities if a != b})

    def forward(self, source: str, target: str, pooled: torch.Tensor) -> torch.Tensor:
        return self.heads[direction(source, target)](pooled)


def direction(source: str, target: str) -> str:
    """The key of the ``source`` -> ``target`` head."""
    return f"{source}_to_{target}"
