"""Projector thumbnails rebuilt from the elements the model saw: image patches
back to a picture, speech log-mel frames to a spectrogram picture."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from unimodal_free.modalities import MODALITY

THUMB_SIZE = 32


def unpatchify_thumbnail(values: torch.Tensor, coords: torch.Tensor, patch_size: int, size: int = THUMB_SIZE,
                         stride: int | None = None) -> torch.Tensor:
    """Image elements back to a picture, (3, size, size) in [0, 1].

    values: (M, p*p*3) patches, each row-major (p, p, 3), pixels scaled to
    [-1, 1] (data.elements.image_elements); coords: (M, 2) patch centres as
    (y, x). Patches are placed by their coords, so row order does not matter.
    ``stride`` (``data.patch_stride``) below p: overlapping patches, each
    contributes its centre ``stride x stride`` square (its own cell).
    """
    p = patch_size
    s = stride or p
    if values.ndim != 2 or values.shape[1] != p * p * 3 or coords.shape != (values.shape[0], 2):
        raise ValueError(f"image elements {tuple(values.shape)}/{tuple(coords.shape)} do not match patch_size={p}")
    ys, xs = coords[:, 0].unique(), coords[:, 1].unique()  # sorted grid centres
    row = torch.searchsorted(ys, coords[:, 0].contiguous())  # (M,)
    col = torch.searchsorted(xs, coords[:, 1].contiguous())  # (M,)
    margin = (p - s) // 2
    cells = values.float().reshape(-1, p, p, 3)[:, margin:margin + s, margin:margin + s]  # (M, s, s, 3)
    grid = values.new_zeros(len(ys), len(xs), s, s, 3, dtype=torch.float32)  # (gh, gw, s, s, 3)
    grid[row, col] = cells
    img = grid.permute(4, 0, 2, 1, 3).reshape(3, len(ys) * s, len(xs) * s)  # (3, gh*s, gw*s)
    img = ((img + 1.0) / 2.0).clamp(0.0, 1.0)
    return F.interpolate(img[None], size=(size, size), mode="area")[0]  # (3, size, size)


# Per-utterance normalised log-mel values (data.elements.speech_elements) this far from 0 saturate the colour map:
# a fixed scale, so two thumbnails compare.
SPECTROGRAM_RANGE = 3.0


def spectrogram_thumbnail(values: torch.Tensor, n_mels: int, size: int = THUMB_SIZE) -> torch.Tensor:
    """Speech elements back to a log-mel picture, (3, size, size) in [0, 1]: time left to right, low
    frequencies at the bottom, magma colours over [-3, 3] normalised log-mel units.

    values: (M, s*n_mels) stacked frames, frame-major (data.elements.speech_elements), padding removed.
    """
    import matplotlib  # here: heavy, and only a run with a writer draws thumbnails

    if values.ndim != 2 or values.shape[1] % n_mels:
        raise ValueError(f"speech elements {tuple(values.shape)} do not match n_mels={n_mels}")
    frames = values.float().reshape(-1, n_mels)  # (M*s, n_mels), one row per 10 ms frame
    picture = frames.T.flip(0)  # (n_mels, F), low frequencies last = bottom
    picture = F.interpolate(picture[None, None], size=(size, size), mode="bilinear", antialias=True,
                            align_corners=False)[0, 0]  # (size, size)
    t = ((picture + SPECTROGRAM_RANGE) / (2 * SPECTROGRAM_RANGE)).clamp(0.0, 1.0).numpy()
    rgba = matplotlib.colormaps["magma"](t)  # (size, size, 4) floats in [0, 1]
    return torch.from_numpy(np.ascontiguousarray(rgba[..., :3])).permute(2, 0, 1).float()  # (3, size, size)


def element_thumbnail(modality: str, values: torch.Tensor, coords: torch.Tensor, data_cfg) -> torch.Tensor | None:
    """The thumbnail of one row's real elements by what its values are (the modality table), or None for
    token rows (text: its caption is the projector's label)."""
    kind = MODALITY[modality].values
    if kind == "patches":
        return unpatchify_thumbnail(values, coords, data_cfg.patch_size, stride=data_cfg.image_stride)
    if kind == "log_mel":
        return spectrogram_thumbnail(values, data_cfg.n_mels)
    return None
