"""Training-image augmentation that keeps a caption true (``data.image_augment``).

Captions name where a thing is, how large it is and its colour, so every transform here is
bounded to leave those true: a small shift, scale and rotation (the position cell and the size
class stay), brightness and contrast applied alike to the three channels (hue stays; a pixel
pushed out of range is pulled toward its own grey, not clipped per channel, so its hue stays too),
and Gaussian pixel noise. A horizontal flip swaps left and right, so it is off unless
``hflip`` asks for it. Each picture's random values are drawn up front (:func:`draw_augment`) from
the training stream's own seeded generator, so a run is reproducible and ranks and workers
differ; eval, probes and embedding never call this.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

MAX_LEVEL = 255.0  # pixels arrive as floats in [0, 255]


@dataclass(frozen=True)
class AugmentDraw:
    """The random values of one picture's augmentation."""

    shift_x: float  # fraction of the side, + = right
    shift_y: float  # fraction of the side, + = down
    scale: float  # size factor about the picture's centre
    degrees: float  # rotation about the picture's centre
    flip: bool  # mirrored left-right
    brightness: float  # factor on every channel
    contrast: float  # factor on the distance from the picture's mean grey
    noise_std: float  # in pixel levels (of 255)
    noise_seed: int


def draw_augment(cfg, rng: random.Random) -> AugmentDraw:
    """One picture's values from ``cfg`` (an ``ImageAugmentConfig``). Always the same number of draws from
    ``rng``, whatever the knobs, so one knob's change leaves the other transforms' values as they were."""
    u = [rng.uniform(-1.0, 1.0) for _ in range(6)]
    flip = rng.random() < 0.5
    noise = rng.random()
    return AugmentDraw(
        shift_x=u[0] * cfg.translate, shift_y=u[1] * cfg.translate, scale=1.0 + u[2] * cfg.scale,
        degrees=u[3] * cfg.rotate, flip=cfg.hflip and flip, brightness=1.0 + u[4] * cfg.brightness,
        contrast=1.0 + u[5] * cfg.contrast, noise_std=noise * cfg.noise * MAX_LEVEL, noise_seed=rng.getrandbits(63),
    )


def warp(x: torch.Tensor, d: AugmentDraw) -> torch.Tensor:
    """The geometric part: (H, W, C) -> (H, W, C) shifted, scaled, rotated (and flipped), edges repeated outward.

    Repeating the edge pixels (not a fill colour) adds no colour the picture did not have.
    """
    h, w, c = x.shape
    a = math.radians(d.degrees)
    cos, sin = math.cos(a) / d.scale, math.sin(a) / d.scale
    fx = -1.0 if d.flip else 1.0
    tx, ty = 2.0 * d.shift_x, 2.0 * d.shift_y  # in grid units: the side spans [-1, 1]
    # Output point p -> input point F R^T (p - t) / s (the inverse of p_in -> s R F p_in + t), x first.
    theta = torch.tensor([[fx * cos, fx * sin, -fx * (cos * tx + sin * ty)],
                          [-sin, cos, sin * tx - cos * ty]], dtype=torch.float32)  # (2, 3)
    grid = F.affine_grid(theta[None], [1, c, h, w], align_corners=False)  # (1, H, W, 2)
    img = x.permute(2, 0, 1)[None]  # (1, C, H, W)
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0].permute(1, 2, 0).contiguous()  # (H, W, C)


def into_range(x: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) pixels -> [0, 255], each pixel outside pulled toward its own grey until it fits.

    Clipping channels one by one would turn a brightened orange yellow; scaling a pixel's distance
    from its grey keeps its hue.
    """
    grey = x.mean(-1, keepdim=True).clamp(0.0, MAX_LEVEL)  # (H, W, 1)
    d = x - grey  # (H, W, 3)
    # The largest t <= 1 with grey + t * d inside [0, 255] in every channel (a channel at the grey never limits).
    up = (MAX_LEVEL - grey) / d.amax(-1, keepdim=True).clamp_min(1e-6)  # (H, W, 1)
    down = grey / d.amin(-1, keepdim=True).neg().clamp_min(1e-6)  # (H, W, 1)
    t = torch.minimum(up, down).clamp(max=1.0)
    return (grey + t * d).clamp(0.0, MAX_LEVEL)


def recolour(x: torch.Tensor, d: AugmentDraw) -> torch.Tensor:
    """The photometric part on (H, W, 3) in [0, 255]: brightness, contrast about the mean grey, noise."""
    x = x * d.brightness
    grey = x.mean()
    x = grey + d.contrast * (x - grey)
    if d.noise_std > 0:
        gen = torch.Generator().manual_seed(d.noise_seed)
        x = x + torch.randn(x.shape, generator=gen) * d.noise_std
    return into_range(x)


def augment_pixels(x: torch.Tensor, d: AugmentDraw) -> torch.Tensor:
    """(H, W, 3) float pixels in [0, 255] -> the same, augmented as ``d`` says."""
    return recolour(warp(x, d), d)
