"""Pictures for TensorBoard without matplotlib: image thumbnails rebuilt from
patch elements, and similarity heatmaps through a small viridis table."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

THUMB_SIZE = 32

# Viridis sampled at 0, 1/8, ..., 1 (matplotlib's table); linear in between.
_VIRIDIS = np.array(
    [
        [0.267, 0.005, 0.329],
        [0.283, 0.141, 0.458],
        [0.254, 0.265, 0.530],
        [0.207, 0.372, 0.553],
        [0.164, 0.471, 0.558],
        [0.128, 0.567, 0.551],
        [0.135, 0.659, 0.518],
        [0.267, 0.749, 0.441],
        [0.478, 0.821, 0.318],
        [0.741, 0.873, 0.150],
        [0.993, 0.906, 0.144],
    ]
)


def unpatchify_thumbnail(values: torch.Tensor, coords: torch.Tensor, patch_size: int, size: int = THUMB_SIZE) -> torch.Tensor:
    """Image elements back to a picture, (3, size, size) in [0, 1].

    values: (M, p*p*3) patches, each row-major (p, p, 3), pixels scaled to
    [-1, 1] (data.elements.image_elements); coords: (M, 2) patch centres as
    (y, x). Patches are placed by their coords, so row order does not matter.
    """
    p = patch_size
    if values.ndim != 2 or values.shape[1] != p * p * 3 or coords.shape != (values.shape[0], 2):
        raise ValueError(f"image elements {tuple(values.shape)}/{tuple(coords.shape)} do not match patch_size={p}")
    ys, xs = coords[:, 0].unique(), coords[:, 1].unique()  # sorted grid centres
    row = torch.searchsorted(ys, coords[:, 0].contiguous())  # (M,)
    col = torch.searchsorted(xs, coords[:, 1].contiguous())  # (M,)
    grid = values.new_zeros(len(ys), len(xs), p, p, 3)  # (gh, gw, p, p, 3)
    grid[row, col] = values.float().reshape(-1, p, p, 3)
    img = grid.permute(4, 0, 2, 1, 3).reshape(3, len(ys) * p, len(xs) * p)  # (3, gh*p, gw*p)
    img = ((img + 1.0) / 2.0).clamp(0.0, 1.0)
    return F.interpolate(img[None], size=(size, size), mode="area")[0]  # (3, size, size)


def heatmap(matrix: torch.Tensor, cell: int = 4) -> np.ndarray:
    """(R, C) scores -> (R*cell, C*cell, 3) uint8 viridis picture, min-max scaled over the matrix."""
    m = matrix.detach().float().cpu().numpy()
    m = np.nan_to_num(m, nan=np.nanmin(m) if np.isfinite(m).any() else 0.0)
    lo, hi = float(m.min()), float(m.max())
    t = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)  # (R, C) in [0, 1]
    pos = np.linspace(0.0, 1.0, len(_VIRIDIS))
    rgb = np.stack([np.interp(t, pos, _VIRIDIS[:, c]) for c in range(3)], axis=-1)  # (R, C, 3)
    rgb = np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1)  # (R*cell, C*cell, 3)
    return (rgb * 255.0 + 0.5).astype(np.uint8)
