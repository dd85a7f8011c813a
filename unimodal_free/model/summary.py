"""A max-pooled summary of the elements, added to every latent after the cross-attention.

The Perceiver's cross-attention reads the elements through a softmax-weighted
average with input-independent queries. At initialisation that average is
near-uniform, so a small object's patches are diluted among the background's
and what distinguishes one outline from another (which local patterns are
present anywhere) is slow to emerge. A per-element MLP followed by a max over
the elements keeps the strongest response of each feature wherever it occurs:
the bag-of-features pooling of point-set and image encoders (PointNet's max,
a CNN's global max pool). It is modality-blind, linear in the number of
elements, and sees only the elements it is given (a student view: the
visible ones).
"""

from __future__ import annotations

import torch
import torch.nn as nn


HIDDEN_RATIO = 2  # the per-element MLP's hidden width, a multiple of d_model


class ElementSummary(nn.Module):
    """elements (B, M, D), padding (B, M) -> (B, D): max over real elements of MLP(LN(element))."""

    def __init__(self, dim: int):
        super().__init__()
        hidden = dim * HIDDEN_RATIO
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, hidden)
        self.proj = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        h = self.proj(nn.functional.gelu(self.fc(self.norm(x))))  # (B, M, D)
        lowest = torch.finfo(h.dtype).min
        pooled = h.masked_fill(padding.unsqueeze(-1), lowest).amax(1)  # (B, D)
        any_real = (~padding).any(1, keepdim=True)  # (B, 1): a row without elements gets 0, not -inf
        return torch.where(any_real, pooled, torch.zeros_like(pooled))
