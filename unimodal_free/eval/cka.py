"""Linear CKA (Kornblith et al. 2019): how alike two representations of the same samples are.

    CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F),  Xc, Yc column-centred.

Invariant to orthogonal transforms and isotropic scaling of either side (so two
modalities need not share axes to score 1), 0 for unrelated features in the
limit of many samples. Rows must be the same samples in the same order.
"""

from __future__ import annotations

import torch


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """x (n, p), y (n, q): row i of both is sample i. Computed in float64; NaN when a side is constant."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka: need (n, p) and (n, q) with the same n, "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")
    x = x.double() - x.double().mean(0, keepdim=True)  # (n, p)
    y = y.double() - y.double().mean(0, keepdim=True)  # (n, q)
    cross = (y.T @ x).square().sum()  # ||Y^T X||_F^2
    norm = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return float(cross / norm) if norm > 0 else float("nan")
